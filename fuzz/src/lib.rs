//! The oracles of the fuzz targets, as plain functions: each `check` takes one fuzz input,
//! drives the filter's public API with it and panics when an oracle does not hold. The
//! targets in `fuzz_targets/` only call them, so the same checks also run as unit tests
//! (`cargo test` in `fuzz/`) over the committed corpus and over inputs made to break them.
//!
//! Every input has the same layout (`input::split`): the first byte `n`, then `n` control
//! bytes (chunk boundaries, edits, verdicts: read with `arbitrary`), then the payload (the
//! configuration, the JSON body or the stream). A seed is `\0` followed by a fixture.

pub mod body;
pub mod config;
pub mod input;
pub mod json;
pub mod sse;
pub mod usage;

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    type Check = fn(&[u8]);

    /// Every committed input passes its target's oracles: what `cargo fuzz run` does first,
    /// here on the stable toolchain without libFuzzer.
    #[test]
    fn committed_corpus_passes() {
        let targets: [(&str, Check); 4] = [
            ("config", crate::config::check),
            ("body", crate::body::check),
            ("sse", crate::sse::check),
            ("usage", crate::usage::check),
        ];
        let mut failed = Vec::new();
        for (target, check) in targets {
            let dir = format!("{}/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|e| e.expect("directory entry").path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{dir} is empty");
            for file in files {
                let data = std::fs::read(&file).expect("corpus file");
                if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                    failed.push(file.display().to_string());
                }
            }
        }
        assert!(
            failed.is_empty(),
            "inputs that fail their oracles: {failed:#?}"
        );
    }
}
