//! `sluice-tools`: command-line tools around Sluice. Binaries live in `src/bin/`.
