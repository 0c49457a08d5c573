"""Query-speed benchmark stores for `cargo xtask bench`: builds the same synthetic requests into an fmd
DuckDB file or into Flask-MonitoringDashboard's SQLite schema, then times the dashboard's views on it and
prints one JSON object, with a fingerprint of the data (hits of one endpoint, errors, versions, profiled
requests and their total time) by which the harness checks that both stores hold the same requests.

    python query_store.py duckdb    --db FILE --rows N --start-epoch S --runs 5 --budget-s 60 --cap-s 120 [--schema-from F]
    python query_store.py dashboard --db FILE --rows N --start-epoch S --runs 5 --budget-s 60 --cap-s 120

`duckdb` runs in the bench tools venv (the `duckdb` package at the daemon's libduckdb version) and fills the
daemon's own tables: --schema-from names a file fmd-daemon wrote earlier in the same benchmark run, whose
tables and indexes are recreated empty, so the store has exactly the schema the daemon writes (the harness
then runs `fmd-daemon migrate` on the filled file to build its rollups);
`dashboard` runs in the bench app venv and lets Flask-MonitoringDashboard create its tables and run
its own view functions, so its side is timed exactly as the dashboard computes it.

Row i is a pure function of i, written once per SQL dialect: endpoint, duration, time, version, user and
status are integer hashes of i, so both stores hold the same data. Times are spread evenly over DAYS days
ending at --start-epoch + DAYS days, versions follow time (v1 first), 1% of requests are errors.

Every request of QUARTILE_ENDPOINT is profiled, with the call tree of one of PATHS code paths chosen by its
number (see `call_trees`), time shared out in fixed per-mille parts of its duration: fmd stores it as stacks
with sample weights (its profile tables), the dashboard as one StackLine per tree node with the node's
inclusive time (its level-3 tables). The fmd side's grouped profile is timed by the harness through
`fmd-daemon query grouped-profile --timing`; the dashboard's is its own `get_grouped_profiler`, timed here.
"""
import argparse
import json
import signal
import statistics
import sys
import time

ENDPOINTS = 200
DAYS = 30
VERSIONS = 20
USERS = 5000
# The endpoint whose per-version quartiles are timed, and whose requests are all profiled.
QUARTILE_ENDPOINT = 7
# Distinct call trees among the profiled requests.
PATHS = 5
# The sampling period a sample count is derived from (100 Hz).
SAMPLE_NS = 10_000_000


def code_lines():
    """Every code line of the synthetic app: (filename, line_number, function_name, code); frame ids and
    CodeLine ids are positions in this list plus one."""
    lines = [(f"/bench/lib/layer{k}.py", 10 + k, f"layer{k}", f"return layer{k + 1}(request)") for k in range(6)]
    for p in range(PATHS):
        depth = 10 + 2 * p
        lines += [(f"/bench/app/path{p}.py", 10 * k, f"p{p}_step{k}", f"return p{p}_step{k + 1}(data)")
                  for k in range(6, depth)]
        lines += [(f"/bench/app/path{p}.py", 10 * depth + j, f"p{p}_step{depth - 1}", f"work_{j}(data)")
                  for j in range(3)]
    return lines


def call_trees():
    """Per code path, its call tree in pre-order as (indent, code line index, self per mille, inclusive per
    mille): a trunk of 6 shared framework lines then 4 to 12 lines of its own (depth 10 to 18), the last of
    which spends 10% of the request itself and calls three leaves (45%, 30%, 15%)."""
    lines = code_lines()
    trees = []
    for p in range(PATHS):
        depth = 10 + 2 * p
        own = [i for i, (f, *_) in enumerate(lines) if f == f"/bench/app/path{p}.py"]
        trunk = list(range(6)) + own[:depth - 6]
        leaves = own[depth - 6:]
        assert len(leaves) == 3 and all(lines[i][2] == f"p{p}_step{depth - 1}" for i in leaves)
        tree = [(k, code, 100 if k == depth - 1 else 0, 1000) for k, code in enumerate(trunk)]
        tree += [(depth, code, share, share) for code, share in zip(leaves, [450, 300, 150])]
        trees.append(tree)
    return trees


def stacks():
    """fmd's view of the trees: per path, each node with time of its own as (frame ids outermost first,
    self per mille); stack ids are positions in the flattened list plus one."""
    out = []
    for p, tree in enumerate(call_trees()):
        chain = []
        for indent, code, own, _ in tree:
            chain = chain[:indent] + [code + 1]
            if own:
                out.append((p, ",".join(map(str, chain)), own))
    return out


class OverCap(Exception):
    pass


def on_alarm(_signum, _frame):
    raise OverCap()


def timed(fn, args):
    """p50 wall time in ms over up to `args.runs` calls, stopping early once `args.budget_s` is spent (after at
    least one run). A run longer than `args.cap_s` is interrupted, and the view reported as slower than that."""
    times = []
    spent = 0.0
    signal.signal(signal.SIGALRM, on_alarm)
    while len(times) < args.runs and (not times or spent < args.budget_s):
        start = time.perf_counter()
        signal.alarm(args.cap_s)
        try:
            fn()
        except OverCap:
            return {"p50_ms": None, "runs": len(times), "over_s": args.cap_s}
        finally:
            signal.alarm(0)
        elapsed = time.perf_counter() - start
        spent += elapsed
        times.append(elapsed * 1000.0)
    return {"p50_ms": statistics.median(times), "runs": len(times), "over_s": None}


# The columns every row derives from i, as SQL over the integer i (both dialects' integer maths agree).
def row_terms(n, div):
    """SQL expressions per column; `div` is the integer-division operator of the dialect."""
    h1 = "((i * 2654435761) % 4294967296)"
    e = f"({h1} % {ENDPOINTS})"
    return {
        "endpoint": e,
        "duration_ms": f"((1 + ({e} % 50) * 2) * (0.5 + (((i * 40503 + 12345) % 65536) % 1000) / 1000.0))",
        # The same duration as an exact integer, for the profiles' per-mille shares.
        "duration_us": f"((1 + ({e} % 50) * 2) * (500 + ((i * 40503 + 12345) % 65536) % 1000))",
        # Requests in the same second get different threads, so (worker, thread, start) keys one request.
        "tid": "(1000 + i % 1000)",
        "offset_s": f"((i * {DAYS * 86400}) {div} {n})",
        "version": f"(1 + (i * {VERSIONS}) {div} {n})",
        "user": f"((i * 48271) % {USERS})",
        "status": f"(CASE WHEN {h1} % 100 = 0 THEN 500 ELSE 200 END)",
    }


# The daemon's `requests` table as of store schema version 1, used only when no file written by fmd-daemon is
# at hand (the harness says so in the report).
FALLBACK_SCHEMA = """
CREATE TABLE requests (
    id BIGINT PRIMARY KEY, run_id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, duration_ns UBIGINT NOT NULL,
    duration_ms DOUBLE NOT NULL, method VARCHAR NOT NULL, path VARCHAR NOT NULL, query VARCHAR,
    http_version VARCHAR NOT NULL, status USMALLINT NOT NULL, bytes_in UBIGINT NOT NULL,
    bytes_out UBIGINT NOT NULL, remote_ip VARCHAR, worker_pid UINTEGER NOT NULL, tid UINTEGER NOT NULL,
    host VARCHAR, user_agent VARCHAR, head BLOB NOT NULL, endpoint VARCHAR, rule VARCHAR
);
CREATE INDEX requests_ts ON requests (ts);
CREATE INDEX requests_endpoint_ts ON requests (endpoint, ts);
"""

# The daemon's profile tables as of store schema version 3 (store/profiles.rs), for a schema source without them.
FALLBACK_PROFILE_SCHEMA = """
CREATE TABLE profile_frames (id BIGINT PRIMARY KEY, file VARCHAR NOT NULL, line INTEGER NOT NULL,
    function VARCHAR NOT NULL, first_line INTEGER NOT NULL, source VARCHAR);
CREATE TABLE profile_stacks (id BIGINT PRIMARY KEY, frames VARCHAR NOT NULL);
CREATE TABLE profiled_requests (id BIGINT PRIMARY KEY, worker_pid UINTEGER NOT NULL, tid UINTEGER NOT NULL,
    ts TIMESTAMP NOT NULL, duration_ns UBIGINT NOT NULL, path VARCHAR NOT NULL, endpoint VARCHAR,
    samples UINTEGER NOT NULL, truncated BOOLEAN NOT NULL, gc_ns UBIGINT);
CREATE INDEX profiled_requests_key ON profiled_requests (worker_pid, tid, ts);
CREATE TABLE profile_samples (profile_id BIGINT NOT NULL, stack_id BIGINT NOT NULL, off_cpu BOOLEAN NOT NULL,
    samples UINTEGER NOT NULL, weight_ns UBIGINT NOT NULL);
"""

# The app version and user columns (store schema version 5), added when the schema source predates them.
EXTRA_COLUMNS = {"version": "VARCHAR", "user": "VARCHAR"}


def copy_schema(con, source):
    """Recreates the tables and indexes of a daemon-written file, empty but for its schema version."""
    con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
    for (sql,) in con.execute(
            "SELECT sql FROM duckdb_tables() WHERE database_name = 'src' AND schema_name = 'main'").fetchall():
        con.execute(sql)
    for (sql,) in con.execute(
            "SELECT sql FROM duckdb_indexes() WHERE database_name = 'src' AND schema_name = 'main'").fetchall():
        if sql:
            con.execute(sql)
    names = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'").fetchall()}
    if "schema_version" in names:
        con.execute("INSERT INTO schema_version SELECT * FROM src.schema_version")
    con.execute("DETACH src")


def fmd_duckdb(args):
    import duckdb

    con = duckdb.connect(args.db)
    notes = []
    if args.schema_from:
        copy_schema(con, args.schema_from)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "requests" not in tables:
        con.execute(FALLBACK_SCHEMA)
        notes.append("no file written by fmd-daemon was at hand, so the bench's copy of store schema v1 was used")
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "profile_samples" not in tables:
        con.execute(FALLBACK_PROFILE_SCHEMA)
        notes.append("the daemon's schema has no profile tables, so the bench's copy of them was used")
    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'").fetchall()}
    missing = [c for c in EXTRA_COLUMNS if c not in columns]
    for c in missing:
        con.execute(f'ALTER TABLE requests ADD COLUMN "{c}" {EXTRA_COLUMNS[c]}')
    if missing:
        notes.append("the daemon's schema has no " + " and no ".join(missing)
                     + " column yet, so the generated store adds them as extra columns")
    t = row_terms(args.rows, "//")
    start = time.perf_counter()
    con.execute(f"""
        INSERT INTO requests (id, run_id, ts, duration_ns, duration_ms, method, path, query, http_version,
                              status, bytes_in, bytes_out, remote_ip, worker_pid, tid, host, user_agent, head,
                              endpoint, rule, version, "user")
        SELECT i + 1, 1, make_timestamp(({args.start_epoch} + {t['offset_s']}) * 1000000),
               CAST({t['duration_ms']} * 1000000 AS UBIGINT), {t['duration_ms']}, 'GET',
               '/e/' || {t['endpoint']}, NULL, 'HTTP/1.1', {t['status']}, 0, 100, '127.0.0.1', 1000, {t['tid']},
               'localhost', 'wrk', ''::BLOB, 'endpoint_' || {t['endpoint']}, '/e/' || {t['endpoint']},
               'v' || {t['version']}, 'user' || {t['user']}
        FROM range({args.rows}) r(i)
    """)
    fill_duckdb_profiles(con, args, t)
    con.execute("CHECKPOINT")
    generate_s = time.perf_counter() - start

    views = {
        # Per endpoint: hits, median duration, last requested.
        "overview": "SELECT endpoint, count(*), median(duration_ms), max(ts) FROM requests GROUP BY endpoint",
        # Requests per endpoint per day and hour.
        "heatmap": "SELECT endpoint, CAST(ts AS DATE) AS day, hour(ts) AS hour, count(*) FROM requests "
                   "GROUP BY ALL",
        # Duration quartiles per version of one endpoint.
        "version_quartiles": "SELECT version, quantile_cont(duration_ms, [0.25, 0.5, 0.75]) FROM requests "
                             f"WHERE endpoint = 'endpoint_{QUARTILE_ENDPOINT}' GROUP BY version",
    }
    timings = {name: timed(lambda sql=sql: con.execute(sql).fetchall(), args)
               for name, sql in views.items()}
    rows = con.execute("SELECT count(*) FROM requests").fetchone()[0]
    hits, errors, versions = con.execute(
        f"SELECT count(*) FILTER (WHERE endpoint = 'endpoint_{QUARTILE_ENDPOINT}'), "
        "count(*) FILTER (WHERE status >= 500), count(DISTINCT version) FROM requests").fetchone()
    profiled, profiled_us = con.execute(
        "SELECT (SELECT count(*) FROM profiled_requests), "
        "(SELECT coalesce(sum(weight_ns), 0) // 1000 FROM profile_samples)").fetchone()
    con.close()
    return {"rows": rows, "generate_s": generate_s, "schema_note": "; ".join(notes) or None, "views": timings,
            "profile_endpoint": f"endpoint_{QUARTILE_ENDPOINT}",
            "fingerprint": {"endpoint_hits": hits, "errors": errors, "versions": versions,
                            "profiled_requests": profiled, "profiled_us": int(profiled_us)}}


def fill_duckdb_profiles(con, args, t):
    """The profiles of QUARTILE_ENDPOINT's requests in the daemon's profile tables, as its profile writer
    stores them: deduplicated frames and stacks, one profiled_requests row keyed like the request, and one
    samples row per stack with time of its own."""
    con.executemany("INSERT INTO profile_frames VALUES (?, ?, ?, ?, ?, ?)",
                    [(n + 1, f, ln, fn, ln, code) for n, (f, ln, fn, code) in enumerate(code_lines())])
    own = stacks()
    con.executemany("INSERT INTO profile_stacks VALUES (?, ?)",
                    [(n + 1, frames) for n, (_, frames, _) in enumerate(own)])
    con.execute("CREATE TEMP TABLE bench_stacks (path INTEGER, stack_id BIGINT, own INTEGER)")
    con.executemany("INSERT INTO bench_stacks VALUES (?, ?, ?)",
                    [(p, n + 1, share) for n, (p, _, share) in enumerate(own)])
    # Profile ids are request ids; weights are exact integers (µs x per mille = ns).
    con.execute(f"""
        CREATE TEMP TABLE bench_profiled AS
        SELECT i + 1 AS id, i, CAST({t['duration_us']} AS UBIGINT) AS duration_us,
               make_timestamp(({args.start_epoch} + {t['offset_s']}) * 1000000) AS ts, {t['tid']} AS tid
        FROM range({args.rows}) r(i) WHERE {t['endpoint']} = {QUARTILE_ENDPOINT}
    """)
    con.execute(f"""
        INSERT INTO profile_samples (profile_id, stack_id, off_cpu, samples, weight_ns)
        SELECT p.id, s.stack_id, false, greatest(1, p.duration_us * s.own // {SAMPLE_NS}), p.duration_us * s.own
        FROM bench_profiled p JOIN bench_stacks s ON s.path = p.i % {PATHS}
        ORDER BY p.id, s.stack_id
    """)
    con.execute(f"""
        INSERT INTO profiled_requests (id, worker_pid, tid, ts, duration_ns, path, endpoint, samples, truncated,
                                       gc_ns)
        SELECT p.id, 1000, p.tid, p.ts, p.duration_us * 1000, '/e/{QUARTILE_ENDPOINT}',
               'endpoint_{QUARTILE_ENDPOINT}', (SELECT sum(samples) FROM profile_samples WHERE profile_id = p.id),
               false, NULL
        FROM bench_profiled p ORDER BY p.id
    """)
    con.execute("DROP TABLE bench_profiled")
    con.execute("DROP TABLE bench_stacks")


def dashboard_sqlite(args):
    import datetime
    import os
    import tempfile

    # The dashboard reads its configuration, and creates its engine and tables, when its modules are first
    # imported: configure first.
    cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    cfg.write(f"[dashboard]\nMONITOR_LEVEL=1\n[database]\nDATABASE=sqlite:///{os.path.abspath(args.db)}\n")
    cfg.close()
    import flask_monitoringdashboard as dashboard
    dashboard.config.init_from(file=cfg.name)
    os.unlink(cfg.name)
    from flask_monitoringdashboard.database import Endpoint, Request, engine, session_scope
    from flask_monitoringdashboard.controllers.endpoints import get_endpoint_overview, get_endpoint_versions
    from flask_monitoringdashboard.controllers.requests import get_hourly_load
    from flask_monitoringdashboard.controllers.profiler import get_grouped_profiler
    from flask_monitoringdashboard.database import CodeLine, StackLine

    t = row_terms(args.rows, "/")
    start = time.perf_counter()
    raw = engine.raw_connection()
    cur = raw.cursor()
    end_epoch = args.start_epoch + DAYS * 86400
    cur.execute(f"""
        WITH RECURSIVE e(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM e WHERE i < {ENDPOINTS - 1})
        INSERT INTO {Endpoint.__tablename__} (id, name, monitor_level, time_added, version_added, last_requested)
        SELECT i + 1, 'endpoint_' || i, 1, datetime({args.start_epoch}, 'unixepoch'), 'v1',
               datetime({end_epoch}, 'unixepoch') FROM e
    """)
    cur.execute(f"""
        WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < {args.rows - 1})
        INSERT INTO {Request.__tablename__} (id, endpoint_id, duration, time_requested, version_requested,
                                            group_by, ip, status_code)
        SELECT i + 1, {t['endpoint']} + 1, {t['duration_ms']},
               datetime({args.start_epoch} + {t['offset_s']}, 'unixepoch'), 'v' || {t['version']},
               'user' || {t['user']}, '127.0.0.1', {t['status']}
        FROM r
    """)
    fill_dashboard_profiles(cur, CodeLine.__tablename__, StackLine.__tablename__, Request.__tablename__)
    raw.commit()
    generate_s = time.perf_counter() - start

    first_day = datetime.date.fromtimestamp(args.start_epoch)
    last_day = datetime.date.fromtimestamp(end_epoch)
    versions = [f"v{v}" for v in range(1, VERSIONS + 1)]

    def overview():
        with session_scope() as session:
            get_endpoint_overview(session)

    def heatmap():
        # The dashboard's hourly load over every endpoint: its only view of requests per day and hour.
        with session_scope() as session:
            get_hourly_load(session, None, first_day, last_day)

    def version_quartiles():
        # The dashboard's per-version box plots of one endpoint.
        with session_scope() as session:
            get_endpoint_versions(session, QUARTILE_ENDPOINT + 1, versions)

    grouped_requests = []

    def grouped_profile():
        # The dashboard's grouped profiler of one endpoint (its last 100 profiled requests).
        with session_scope() as session:
            table = get_grouped_profiler(session, QUARTILE_ENDPOINT + 1)
        grouped_requests.append(table[0]["total_hits"] if table else 0)

    timings = {name: timed(fn, args) for name, fn in
               [("overview", overview), ("heatmap", heatmap), ("version_quartiles", version_quartiles),
                ("grouped_profile", grouped_profile)]}
    rows = cur.execute(f"SELECT count(*) FROM {Request.__tablename__}").fetchone()[0]
    hits, errors, versions = cur.execute(
        f"SELECT sum(endpoint_id = {QUARTILE_ENDPOINT + 1}), sum(status_code >= 500), "
        f"count(DISTINCT version_requested) FROM {Request.__tablename__}").fetchone()
    profiled, profiled_ms = cur.execute(
        f"SELECT count(DISTINCT request_id), coalesce(sum(duration) FILTER (WHERE indent = 0), 0) "
        f"FROM {StackLine.__tablename__}").fetchone()
    return {"rows": rows, "generate_s": generate_s, "schema_note": None, "views": timings,
            "grouped_requests": grouped_requests[-1] if grouped_requests else None,
            "fingerprint": {"endpoint_hits": hits, "errors": errors, "versions": versions,
                            "profiled_requests": profiled, "profiled_us": round(profiled_ms * 1000)}}


def fill_dashboard_profiles(cur, code_table, stack_table, request_table):
    """The same profiles as the dashboard's level 3 stores them: one CodeLine per code line, and per profiled
    request one StackLine per call-tree node, in pre-order, with its indent and inclusive time in ms."""
    cur.executemany(f"INSERT INTO {code_table} (id, filename, line_number, function_name, code) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(n + 1, f, ln, fn, code) for n, (f, ln, fn, code) in enumerate(code_lines())])
    cur.execute("CREATE TEMP TABLE bench_nodes (path INTEGER, position INTEGER, indent INTEGER, code_id INTEGER, "
                "inclusive INTEGER)")
    cur.executemany("INSERT INTO bench_nodes VALUES (?, ?, ?, ?, ?)",
                    [(p, pos, indent, code + 1, inclusive) for p, tree in enumerate(call_trees())
                     for pos, (indent, code, _, inclusive) in enumerate(tree)])
    duration_us = row_terms(1, "/")["duration_us"]
    cur.execute(f"""
        INSERT INTO {stack_table} (request_id, position, indent, code_id, duration)
        SELECT r.id, n.position, n.indent, n.code_id, ({duration_us}) * n.inclusive / 1000000.0
        FROM (SELECT id, id - 1 AS i FROM {request_table} WHERE endpoint_id = {QUARTILE_ENDPOINT + 1}) r
        JOIN bench_nodes n ON n.path = r.i % {PATHS}
        ORDER BY r.id, n.position
    """)
    cur.execute("DROP TABLE bench_nodes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=["duckdb", "dashboard"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--start-epoch", type=int, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--cap-s", type=int, default=120, help="interrupt a single run after this long")
    parser.add_argument("--schema-from", help="a DuckDB file fmd-daemon wrote, whose schema to use")
    args = parser.parse_args()
    result = fmd_duckdb(args) if args.engine == "duckdb" else dashboard_sqlite(args)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
