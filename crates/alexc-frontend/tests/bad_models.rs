//! Every file in `tests/bad-models/` must be rejected with a diagnostic that
//! names the file, line and column, shows the snippet and gives a hint. The
//! rendered messages are pinned by insta snapshots (one per file).

use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};

fn render(err: &alexc_frontend::ModelError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .expect("rendering to a String cannot fail");
    out
}

#[test]
fn bad_models_are_rejected_with_a_located_hint() {
    let mut problems = Vec::new();
    insta::glob!("bad-models/*.ron", |path| {
        let text = std::fs::read_to_string(path).expect("read corpus file");
        let name = format!(
            "bad-models/{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name")
        );
        let err = match alexc_frontend::parse(&text, &name, 1) {
            Ok(_) => panic!("{name} was accepted, but it is in the bad-model corpus"),
            Err(e) => e,
        };
        insta::assert_snapshot!(format!("{}\n{}", err.position(), render(&err)));
        // Every diagnostic has a location and a hint.
        if err.hint.is_none() || err.location.is_none() {
            problems.push(format!(
                "{name}: hint {:?}, location {:?}",
                err.hint, err.location
            ));
        }
    });
    assert!(
        problems.is_empty(),
        "diagnostics without hint or location:\n{}",
        problems.join("\n")
    );
}

#[test]
fn corpus_has_at_least_twenty_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-models");
    let count = std::fs::read_dir(dir).expect("corpus dir").count();
    assert!(count >= 20, "only {count} bad models");
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let err = alexc_frontend::load(Path::new("no/such/model.ron"), 1).expect_err("must fail");
    assert_eq!(err.kind, alexc_frontend::ErrorKind::Io);
    assert!(err.message.contains("no/such/model.ron"));
}

#[test]
fn batch_zero_is_an_error() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet-small.ron");
    let err = alexc_frontend::load(&path, 0).expect_err("batch 0 must fail");
    assert_eq!(err.kind, alexc_frontend::ErrorKind::InvalidSize);
}
