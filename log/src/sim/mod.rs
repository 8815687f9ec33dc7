//! Pieces of the deterministic Raft simulator: seeded randomness, a simulated network, and
//! safety checkers. None of them reads a clock, does I/O, or draws randomness other than from
//! the run's seed, so one seed replays one run exactly.
//!
//! - [`rng`]: [`Streams`](rng::Streams) splits the run's seed into independent generators per
//!   purpose (network, disk, workload, faults, flush reports, one per node), so adding draws to
//!   one never changes what another produces.
//! - [`network`]: [`SimNetwork`](network::SimNetwork) carries messages between node ids with
//!   seeded loss, duplication and delay (hence reordering), partitions and one-way blocks, on
//!   the driver's virtual clock.
//! - [`check`]: [`Checker`](check::Checker) checks Raft's safety rules over plain
//!   [`ReplicaView`](check::ReplicaView)s after every step, and the client guarantees at the end.
//! - [`cluster`]: [`Simulation`](cluster::Simulation), the driver for one partition: real
//!   [`Raft`](crate::raft::Raft) cores over real journals on in-memory crash disks, with the fault
//!   schedule, the client workload and the liveness gate. `sluice-sim` and the `sim_seeds` test
//!   run it over many seeds.
//!
//! # Driving a run
//!
//! A driver (such as [`cluster`]) owns the virtual clock and the nodes, and loops until the
//! run's time is up:
//!
//! 1. Advance `now_ms` to the earliest of [`SimNetwork::next_delivery_ms`](network::SimNetwork::next_delivery_ms),
//!    the nodes' own deadlines and the next scheduled fault or client request.
//! 2. Hand each message from [`SimNetwork::deliver_due`](network::SimNetwork::deliver_due) to
//!    its node, fire due timers, and [`send`](network::SimNetwork::send) every message the
//!    nodes emit. Draw faults from `streams.faults()`: crash a node (and
//!    [`clear_node`](network::SimNetwork::clear_node), then
//!    [`Checker::note_restart`](check::Checker::note_restart) when it comes back), partition,
//!    or switch to [`NetworkFaults::chaotic`](network::NetworkFaults::chaotic).
//! 3. Report client traffic with [`Checker::note_proposed`](check::Checker::note_proposed) and
//!    [`Checker::note_acknowledged`](check::Checker::note_acknowledged).
//! 4. Build a view of every live replica and call
//!    [`Checker::check_step`](check::Checker::check_step).
//!
//! At the end, [`heal`](network::SimNetwork::heal), restore the default faults, restart every
//! node, run until all replicas hold the same commit index, check a last step, and call
//! [`Checker::check_final`](check::Checker::check_final). A run that committed nothing fails.
//! On any failure, print the seed and the command that replays it.

pub mod check;
pub mod cluster;
pub mod network;
pub mod rng;
