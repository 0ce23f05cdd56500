//! uclab's simulation layer: scenario files and the built-in topology, the turmoil world built
//! from them, the timeline of actions and faults, expectations, and the outputs of a run
//! (pcapng capture, transcript, report.json, JUnit XML). Also the live mode (`serve`).

pub mod capacity;
pub mod commands;
pub mod ladder;
pub mod live;
pub mod nodes;
pub mod progress;
pub mod regbench;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod time;

pub use runner::{RunResult, run, run_into, run_stepwise};
pub use scenario::{CheckError, Scenario, load, parse};
pub use uclab_net::{EventRef, Events};
