//! `sluice`: the Sluice broker binary.

fn main() -> anyhow::Result<()> {
    anyhow::bail!(
        "the broker is not implemented yet: this build provides the journal (sluice-log) and \
         its tools only; see README.md"
    )
}
