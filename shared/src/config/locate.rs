//! Byte offsets → `Pos`, and the list of errors found so far.

use std::ops::Range;

use super::model::{ConfigError, ConfigErrors, Pos};

/// Turns byte offsets of one text into 1-based line and column (columns
/// count characters, not bytes, as an editor does).
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0]` is 0, so there is always a line at or before `offset`.
        let line = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        Pos {
            line: line + 1,
            col,
        }
    }
}

/// Collects every error of one config, then hands them back in file order.
pub(crate) struct Errors<'t> {
    file: String,
    lines: LineIndex<'t>,
    list: Vec<ConfigError>,
}

impl<'t> Errors<'t> {
    pub(crate) fn new(file: String, text: &'t str) -> Self {
        Errors {
            file,
            lines: LineIndex::new(text),
            list: Vec::new(),
        }
    }

    /// The config's name, as errors show it.
    /// How many errors so far (a reader compares before and after a
    /// table to know whether all of it was read).
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn pos(&self, span: &Range<usize>) -> Pos {
        self.lines.pos(span.start)
    }

    pub(crate) fn at(&mut self, pos: Pos, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            pos,
            message: message.into(),
        });
    }

    pub(crate) fn at_span(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let pos = self.pos(span);
        self.at(pos, message);
    }

    /// `Ok` if nothing went wrong, else every error in file order.
    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        if self.list.is_empty() {
            return Ok(());
        }
        let mut list = self.list;
        // Stable: errors at the same place keep the order they were found in.
        list.sort_by_key(|e| (e.pos.line, e.pos.col));
        list.dedup();
        Err(ConfigErrors(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn lines_and_columns() {
        let text = "ab\ncé d\n\nx";
        let idx = LineIndex::new(text);
        assert_eq!(idx.pos(0), p(1, 1));
        assert_eq!(idx.pos(1), p(1, 2));
        assert_eq!(idx.pos(2), p(1, 3)); // the newline itself
        assert_eq!(idx.pos(3), p(2, 1));
        // "é" is two bytes but one column.
        assert_eq!(idx.pos(6), p(2, 3));
        assert_eq!(idx.pos(7), p(2, 4));
        assert_eq!(idx.pos(9), p(3, 1));
        assert_eq!(idx.pos(10), p(4, 1));
        // Past the end, or inside a character: clamped.
        assert_eq!(idx.pos(100), p(4, 2));
        assert_eq!(idx.pos(5), p(2, 2));
    }

    #[test]
    fn errors_come_back_in_file_order() {
        let mut errs = Errors::new("/c.toml".into(), "a\nb\nc\n");
        errs.at(p(3, 1), "third");
        errs.at(p(1, 1), "first");
        errs.at(p(3, 1), "third again");
        errs.at(p(1, 1), "first");
        let got = errs.finish().unwrap_err().to_string();
        assert_eq!(
            got,
            "/c.toml:1:1: first\n/c.toml:3:1: third\n/c.toml:3:1: third again"
        );
    }
}
