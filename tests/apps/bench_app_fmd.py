"""The benchmark app with Flask-MonitoringDashboard bound, the way its documentation says to: configure
from a file, then `dashboard.bind(app)`.

`cargo xtask bench` writes the file and passes it in `FMD_BENCH_DASHBOARD_CONFIG`: it sets MONITOR_LEVEL
(the level every endpoint starts with) and a fresh SQLite database per run, so a level never leaks from
one run into the next.
"""
import flask_monitoringdashboard as dashboard

from bench_app import app

# The dashboard reads MONITOR_LEVEL when it first registers an endpoint, so configure before binding.
dashboard.config.init_from(envvar="FMD_BENCH_DASHBOARD_CONFIG")
dashboard.bind(app)
