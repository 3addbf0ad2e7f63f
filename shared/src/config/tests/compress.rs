//! `compress`: its forms, defaults, and every refusal located.

use super::{MINIMAL, errors, ok};
use crate::config::compress::{Coding, Compress, Levels};

fn site(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

#[test]
fn off_by_default_and_true_takes_the_defaults() {
    let (_, c) = ok(MINIMAL);
    assert_eq!(c.sites[0].files.compress, None);
    let (_, c) = ok(&site("compress = true"));
    assert_eq!(c.sites[0].files.compress, Some(Compress::default()));
    let (_, c) = ok(&site("compress = false"));
    assert_eq!(c.sites[0].files.compress, None);
}

#[test]
fn a_table_sets_each_part() {
    let (_, c) = ok(&site(
        "compress = { encodings = [\"gzip\", \"br\"], types = [\"text/*\", \"+JSON\"], \
         min_length = \"1k\", level = { gzip = 9, br = 11, zstd = 19 } }",
    ));
    let got = c.sites[0].files.compress.clone().unwrap();
    assert_eq!(got.encodings, [Coding::Gzip, Coding::Br]);
    assert_eq!(got.types, ["text/*", "+json"]);
    assert_eq!(got.min_length, 1024);
    assert_eq!(
        got.levels,
        Levels {
            gzip: 9,
            br: 11,
            zstd: 19
        }
    );
    // What is not given keeps its default.
    let (_, c) = ok(&site("compress = { min_length = 0 }"));
    let got = c.sites[0].files.compress.clone().unwrap();
    assert_eq!(got.min_length, 0);
    assert_eq!(got.encodings, Compress::default().encodings);
}

#[test]
fn bad_values_are_located_with_suggestions() {
    // MINIMAL is three lines; the site's extra line is line 4.
    assert_eq!(
        errors(&site("compress = \"yes\"")),
        [
            "4:12: \"compress\" must be true, false or a table like { encodings = [\"zstd\", \"br\", \"gzip\"] }, not \"yes\""
        ]
    );
    assert_eq!(
        errors(&site("compress = { encoding = [\"br\"] }")),
        ["4:14: unknown key \"encoding\", did you mean \"encodings\"? (in \"compress\")"]
    );
    assert_eq!(
        errors(&site("compress = { encodings = [\"gz\", \"br\", \"br\"] }")),
        [
            "4:27: unknown encoding \"gz\", did you mean \"gzip\"?",
            "4:39: encoding \"br\" is listed twice",
        ]
    );
    assert_eq!(
        errors(&site("compress = { encodings = [\"lzma\"] }")),
        ["4:27: unknown encoding \"lzma\" (Baton compresses with \"zstd\", \"br\" and \"gzip\")"]
    );
    assert_eq!(
        errors(&site("compress = { encodings = [] }")),
        [
            "4:26: \"encodings\" must list at least one of \"zstd\", \"br\", \"gzip\" (compress = false turns compression off)"
        ]
    );
    assert_eq!(
        errors(&site("compress = { types = [\"text\", \"*/*\"] }")),
        [
            "4:23: compress type \"text\" must be a media type (\"application/json\"), a major type (\"text/*\") or a suffix (\"+json\")",
            "4:31: compress type \"*/*\" must be a media type (\"application/json\"), a major type (\"text/*\") or a suffix (\"+json\")",
        ]
    );
    assert_eq!(
        errors(&site("compress = { min_length = \"2m\" }")),
        ["4:27: compress.min_length = \"2m\" is too large (at most 1m)"]
    );
    assert_eq!(
        errors(&site("compress = { min_length = \"lots\" }")),
        ["4:27: \"compress.min_length\" must be a size like 16384 or \"16k\", not \"lots\""]
    );
    assert_eq!(
        errors(&site(
            "compress = { level = { gzip = 10, brotli = 4, zstd = \"3\" } }"
        )),
        [
            "4:31: \"gzip\" must be a level from 1 to 9, not 10",
            "4:35: unknown key \"brotli\", did you mean \"br\"? (in \"level\")",
            "4:54: \"zstd\" must be a level from 1 to 19, not \"3\"",
        ]
    );
    // A misspelt `compress` itself.
    assert_eq!(
        errors(&site("compres = true")),
        ["4:1: unknown key \"compres\", did you mean \"compress\"?"]
    );
}
