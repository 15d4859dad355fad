//! Health flow, MySQL check, text result sets: the answer to one COM_QUERY
//! read packet by packet (column count, column definitions, EOF, rows, EOF;
//! or OK; or ERR) into a small [`Table`]. Bounded: at most [`MAX_COLUMNS`]
//! columns, [`MAX_ROWS`] rows kept (more are read and dropped) and
//! [`MAX_RESULT`] bytes in all.

use super::packets::{clean_text, is_eof, is_err, is_ok, Cursor, ServerError};

/// Most columns a result may have.
pub const MAX_COLUMNS: usize = 512;
/// Rows kept; the checks look at the first few.
pub const MAX_ROWS: usize = 16;
/// Most payload bytes one result may take in all.
pub const MAX_RESULT: usize = 1024 * 1024;

/// A query's answer: column names, and the first rows (`None` is NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// The value of column `name` (ASCII case ignored) in row `row`:
    /// `None` when there is no such row or column, `Some(None)` for NULL.
    pub fn get(&self, row: usize, name: &str) -> Option<Option<&str>> {
        let col = self.columns.iter().position(|c| c.eq_ignore_ascii_case(name))?;
        self.rows.get(row)?.get(col).map(Option::as_deref)
    }

    /// The first of `names` that is a column, valued in row `row`.
    pub fn get_any(&self, row: usize, names: &[&str]) -> Option<Option<&str>> {
        names.iter().find_map(|n| self.get(row, n))
    }
}

/// What one packet of the answer did.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// More packets to come.
    More,
    /// The answer is complete.
    Done(Table),
    /// The server answered ERR.
    Failed(ServerError),
}

/// A malformed answer (why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    ColumnCount,
    /// Column definitions still to come.
    Columns(usize),
    /// The EOF after the definitions.
    ColumnsEof,
    Rows,
}

/// Reads one answer.
#[derive(Debug)]
pub struct ResultReader {
    part: Part,
    table: Table,
    /// Payload bytes taken so far.
    bytes: usize,
}

impl Default for ResultReader {
    fn default() -> ResultReader {
        ResultReader {
            part: Part::ColumnCount,
            table: Table::default(),
            bytes: 0,
        }
    }
}

impl ResultReader {
    pub fn new() -> ResultReader {
        ResultReader::default()
    }

    /// Takes the next packet of the answer.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Feed, Malformed> {
        self.bytes = self.bytes.saturating_add(payload.len());
        if self.bytes > MAX_RESULT {
            return Err(Malformed("result set too large"));
        }
        if is_err(payload) {
            return Ok(Feed::Failed(ServerError::parse(payload)));
        }
        match self.part {
            Part::ColumnCount => self.column_count(payload),
            Part::Columns(left) => self.column(payload, left),
            Part::ColumnsEof if is_eof(payload) => {
                self.part = Part::Rows;
                Ok(Feed::More)
            }
            Part::ColumnsEof => Err(Malformed("no EOF after the column definitions")),
            Part::Rows if is_eof(payload) => Ok(Feed::Done(std::mem::take(&mut self.table))),
            Part::Rows => self.row(payload),
        }
    }

    fn column_count(&mut self, payload: &[u8]) -> Result<Feed, Malformed> {
        if is_ok(payload) {
            // A statement without a result set.
            return Ok(Feed::Done(Table::default()));
        }
        if payload.first() == Some(&0xfb) {
            return Err(Malformed("server asked for a LOCAL INFILE"));
        }
        let mut c = Cursor::new(payload);
        let n = c.lenenc("column count").ok().flatten().unwrap_or(0);
        if n == 0 || !c.is_empty() {
            return Err(Malformed("bad column count"));
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > MAX_COLUMNS {
            return Err(Malformed("too many columns"));
        }
        self.table.columns.reserve(n);
        self.part = Part::Columns(n);
        Ok(Feed::More)
    }

    /// A protocol 4.1 column definition: catalog, schema, table, org_table,
    /// name, org_name, then fixed fields. Only the name is kept.
    fn column(&mut self, payload: &[u8], left: usize) -> Result<Feed, Malformed> {
        let mut c = Cursor::new(payload);
        let mut name = None;
        for i in 0..6 {
            let field = c
                .lenenc_bytes("column definition")
                .map_err(|_| Malformed("bad column definition"))?;
            if i == 4 {
                name = field;
            }
        }
        let name = name.ok_or(Malformed("bad column definition"))?;
        self.table.columns.push(clean_text(name));
        self.part = if left > 1 {
            Part::Columns(left - 1)
        } else {
            Part::ColumnsEof
        };
        Ok(Feed::More)
    }

    /// A text row: one length-encoded string (or NULL) per column, nothing after.
    fn row(&mut self, payload: &[u8]) -> Result<Feed, Malformed> {
        let mut c = Cursor::new(payload);
        let keep = self.table.rows.len() < MAX_ROWS;
        let mut row = Vec::with_capacity(if keep { self.table.columns.len() } else { 0 });
        for _ in 0..self.table.columns.len() {
            let value = c.lenenc_bytes("row").map_err(|_| Malformed("bad row"))?;
            if keep {
                row.push(value.map(clean_text));
            }
        }
        if !c.is_empty() {
            return Err(Malformed("bad row"));
        }
        if keep {
            self.table.rows.push(row);
        }
        Ok(Feed::More)
    }
}

#[cfg(test)]
#[path = "resultset_tests.rs"]
mod tests;
