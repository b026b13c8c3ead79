//! Config compilation: any text either compiles or yields located errors; it never panics.
//! `compile_str` is the one path behind `check`, start-up and every reload, so a config that
//! crashed it would take a running gateway down on SIGHUP.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A directory that does not exist: a config naming certificate files gets errors, not reads
    // of whatever the fuzzer guessed.
    match gatehouse::snapshot::compile_str("fuzz.yaml", text, std::path::Path::new("/nonexistent/gatehouse-fuzz")) {
        Ok(snapshot) => {
            // A config that compiled is internally consistent: every routed API's backend exists.
            let _ = snapshot.api_count();
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed compile reports at least one error");
            for e in &errors {
                // Errors are printable (`gatehouse check` prints every one).
                let _ = e.to_string();
            }
        }
    }
});
