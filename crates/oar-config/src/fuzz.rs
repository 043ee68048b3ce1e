//! The fuzz harness of the config loader, shared by `fuzz/fuzz_targets/config.rs` and
//! `tests/fuzz_corpus.rs` (which replays the seed corpus on stable). Not part of the API.

use std::path::Path;

use crate::{ConfigDocument, parse_str};

/// `config`: `data` as a `config.toml`, loaded and validated. Every error and warning names
/// the file; the editable document of the same text, printed back, loads to the same config
/// with the same warnings (and fails where the text fails); listing its runners and a no-op
/// removal do not change it. Panics only on a bug.
pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("config.toml");
    let loaded = parse_str(text, path);
    match &loaded {
        Ok(l) => {
            for w in &l.warnings {
                let w = w.to_string();
                assert!(
                    w.starts_with("config.toml"),
                    "warning without the file: {w}"
                );
            }
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("config.toml"), "error without the file: {e}");
        }
    }
    let Ok(mut doc) = ConfigDocument::parse(text, path) else {
        return;
    };
    let again = doc.validate();
    match (&loaded, &again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(format!("{:?}", a.config), format!("{:?}", b.config));
            let words = |l: &crate::Loaded| -> Vec<String> {
                l.warnings.iter().map(ToString::to_string).collect()
            };
            assert_eq!(words(a), words(b));
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "the text and its document disagree: {:?} vs {:?}",
            loaded.as_ref().map(|_| ()).map_err(ToString::to_string),
            again.as_ref().map(|_| ()).map_err(ToString::to_string)
        ),
    }
    let printed = doc.to_string();
    let runners = doc.runners();
    assert_eq!(doc.remove_runners(|_| false), 0);
    assert_eq!(
        doc.to_string(),
        printed,
        "a no-op removal changed the document"
    );
    if let Ok(l) = &loaded {
        assert_eq!(runners.len(), l.config.runners.len(), "runner count");
    }
}
