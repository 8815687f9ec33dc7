//! `sluice-tools`: command-line tools around Sluice. Binaries live in `src/bin/`.

pub mod bench;
pub mod ctl;
pub mod engine_sim;
