//! Starting the Python stack sampler (one CPU-clock perf event per CPU, plus `sched_switch` in wall-clock
//! mode) and keeping its tables current: each worker's frame layout and its `tid -> PyThreadState` map.

use std::collections::{HashMap, HashSet};

use aya::{
    maps::{Array, HashMap as BpfHashMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent, TracePoint,
    },
};
use fmd_common::{
    names,
    profile::{PyLayout, SamplerConfig},
    stats,
};

use super::{field_offset, map_mut, program_error, program_mut, Capture, Error};
use crate::profile::ProfileMode;

/// The sampler's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerCounters {
    pub samples_sent: u64,
    pub sample_drops: u64,
    pub samples_truncated: u64,
    /// Threads not marked as serving (table full): no off-CPU stacks for them.
    pub serving_table_full: u64,
    /// Off-CPU stacks whose wait could not be timed (table full).
    pub offcpu_table_full: u64,
    /// GC collections whose start could not be kept (table full).
    pub gc_table_full: u64,
}

/// Which threads of which worker the daemon told BPF about, to remove the stale ones on refresh.
#[derive(Debug, Default)]
pub struct SamplerTables {
    tids: HashMap<u32, HashSet<u32>>,
}

impl Capture {
    /// Attaches the CPU-clock sampler (every `1/hz` s of CPU time) on every online CPU and, in wall mode, `sched_switch`.
    pub fn start_sampler(&mut self, hz: u64, mode: ProfileMode) -> Result<(), Error> {
        let switch_next_pid = field_offset("sched", "sched_switch", "next_pid")?;
        let config = SamplerConfig {
            wall: u32::from(mode == ProfileMode::Wall),
            switch_next_pid,
        };
        let mut array: Array<_, SamplerConfig> =
            Array::try_from(map_mut(&mut self.ebpf, names::SAMPLER_CONFIG)?).map_err(|source| {
                Error::Map {
                    name: names::SAMPLER_CONFIG,
                    source,
                }
            })?;
        array.set(0, config, 0).map_err(|source| Error::Map {
            name: names::SAMPLER_CONFIG,
            source,
        })?;

        let program = names::SAMPLE_PROGRAM;
        let prog: &mut PerfEvent = program_mut(&mut self.ebpf, program)?;
        prog.load()
            .map_err(|source| program_error(program, source))?;
        let cpus = aya::util::online_cpus().map_err(|(_, e)| Error::Cpus(e))?;
        for cpu in cpus {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                // cpu-clock counts nanoseconds: a fixed period gives every sample the same, known weight.
                SamplePolicy::Period(1_000_000_000 / hz.max(1)),
                false,
            )
            .map_err(|source| program_error(program, source))?;
        }
        if mode == ProfileMode::Wall {
            let program = names::SWITCH_PROGRAM;
            let prog: &mut TracePoint = program_mut(&mut self.ebpf, program)?;
            prog.load()
                .map_err(|source| program_error(program, source))?;
            prog.attach("sched", "sched_switch")
                .map_err(|source| program_error(program, source))?;
        }
        tracing::info!(hz, ?mode, "Python stack sampler attached");
        Ok(())
    }

    /// Tells BPF where the frame chain of `tgid`'s interpreter is.
    pub fn set_py_layout(&mut self, tgid: u32, layout: PyLayout) -> Result<(), Error> {
        let mut map: BpfHashMap<_, u32, PyLayout> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, names::PYLAYOUTS)?).map_err(|source| {
                Error::Map {
                    name: names::PYLAYOUTS,
                    source,
                }
            })?;
        map.insert(tgid, layout, 0).map_err(|source| Error::Map {
            name: names::PYLAYOUTS,
            source,
        })
    }

    /// Replaces the thread states of `tgid` with `threads` (`tid -> PyThreadState`).
    pub fn set_tstates(
        &mut self,
        tables: &mut SamplerTables,
        tgid: u32,
        threads: &HashMap<u32, u64>,
    ) -> Result<(), Error> {
        let mut map: BpfHashMap<_, u32, u64> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, names::TSTATES)?).map_err(|source| {
                Error::Map {
                    name: names::TSTATES,
                    source,
                }
            })?;
        let known = tables.tids.entry(tgid).or_default();
        for tid in known.iter().filter(|t| !threads.contains_key(t)) {
            let _ = map.remove(tid);
        }
        known.clear();
        for (&tid, &tstate) in threads {
            map.insert(tid, tstate, 0).map_err(|source| Error::Map {
                name: names::TSTATES,
                source,
            })?;
            known.insert(tid);
        }
        Ok(())
    }

    /// Forgets an exited worker's layout and threads.
    pub fn forget_python(&mut self, tables: &mut SamplerTables, tgid: u32) {
        let tids = tables.tids.remove(&tgid).unwrap_or_default();
        if let Ok(mut map) = map_mut(&mut self.ebpf, names::TSTATES).and_then(|m| {
            BpfHashMap::<_, u32, u64>::try_from(m).map_err(|source| Error::Map {
                name: names::TSTATES,
                source,
            })
        }) {
            for tid in &tids {
                let _ = map.remove(tid);
            }
        }
        if let Ok(mut map) = map_mut(&mut self.ebpf, names::PYLAYOUTS).and_then(|m| {
            BpfHashMap::<_, u32, PyLayout>::try_from(m).map_err(|source| Error::Map {
                name: names::PYLAYOUTS,
                source,
            })
        }) {
            let _ = map.remove(&tgid);
        }
    }

    pub fn sampler_counters(&self) -> Result<SamplerCounters, Error> {
        let sums = self.stat_sums()?;
        let at = |index: u32| sums[index as usize];
        Ok(SamplerCounters {
            samples_sent: at(stats::SAMPLES_SENT),
            sample_drops: at(stats::SAMPLE_DROPS),
            samples_truncated: at(stats::SAMPLES_TRUNCATED),
            serving_table_full: at(stats::SERVING_TABLE_FULL),
            offcpu_table_full: at(stats::OFFCPU_TABLE_FULL),
            gc_table_full: at(stats::GC_TABLE_FULL),
        })
    }
}
