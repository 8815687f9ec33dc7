//! `sluice-benches`: criterion benchmarks of the hot paths, in `benches/`. Run them with
//! `cargo bench -p sluice-benches`.
