//! `sluice-engine`: the deterministic workflow engine of a partition.
//!
//! Not implemented yet. This crate will hold records (commands, events, rejections), the BPMN
//! model and a FEEL subset, the processors that turn a command and the partition state into
//! follow-up records, and snapshots. It will perform no I/O. Until then it exports nothing.
