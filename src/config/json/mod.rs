//! Configuration, step 1 for EasyProxy's own JSON file (`conf/default.json`):
//! a second front-end feeding the same raw tables and the same validation
//! as `easyproxy.toml`.
//!
//! `tree` reads the JSON keeping every member, `read` checks each key's
//! type and range (every problem at once, named by its JSON key), `write`
//! turns the keys into the equivalent TOML text, which the TOML front-end
//! reads into the raw tables: what `--check` prints is what runs.

mod read;
mod tree;
mod write;

use std::path::Path;

use super::{raw, validate, Config};

/// A file is EasyProxy's JSON when its name ends in `.json` or its first
/// non-blank character is `{` (which no TOML file can start with).
pub(super) fn is_json(path: &Path, text: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start_matches('\u{feff}').trim_start().starts_with('{')
}

impl Config {
    /// Parses and validates EasyProxy's JSON file, also giving the
    /// equivalent easyproxy.toml (`--check` prints it). The error lists
    /// every problem, each named by its JSON key.
    pub fn parse_json(text: &str) -> Result<(Config, String), Vec<String>> {
        let file = read::easy_file(tree::parse(text).map_err(|e| vec![e])?)?;
        if file.backends.len() > super::MAX_BACKENDS {
            return Err(vec![validate::too_many_backends(file.backends.len())]);
        }
        let converted = write::convert(&file);
        // The equivalent TOML is held to the TOML file's own cap.
        if converted.toml.len() as u64 > super::MAX_FILE_SIZE {
            return Err(vec![format!(
                "the equivalent TOML would be larger than {} MiB (the cap of a configuration file)",
                super::MAX_FILE_SIZE >> 20
            )]);
        }
        let raw =
            raw::parse(&converted.toml).map_err(|e| vec![format!("the equivalent TOML is wrong (a bug): {e}")])?;
        let mut config = validate::config(raw).map_err(|problems| {
            problems
                .iter()
                .map(|p| json_key(p, &converted.name))
                .collect::<Vec<_>>()
        })?;
        config.warnings.splice(0..0, converted.warnings);
        Ok((config, converted.toml))
    }
}

/// A validation problem, named by the TOML key of the converted file,
/// renamed after the JSON key it came from (`service[0] (mysql).backend[1].address: ...`
/// becomes `backends[1]: ...`); a key with no JSON counterpart stays.
fn json_key(problem: &str, name: &str) -> String {
    let named = format!("service[0] ({name}).");
    let rest = problem
        .strip_prefix(&named)
        .or_else(|| problem.strip_prefix("service[0]."))
        .unwrap_or(problem);
    let Some((key, msg)) = rest.split_once(": ") else {
        return problem.to_string();
    };
    let json = match key {
        "listen" => "port".to_string(),
        "strategy" => "strategy".to_string(),
        "backend" => "backends".to_string(),
        "stats.listen" => "webport".to_string(),
        k if k.starts_with("health_check") => "heartbeat".to_string(),
        k => match k.strip_prefix("backend[").and_then(|r| r.split_once(']')) {
            Some((j, _)) => format!("backends[{j}]"),
            None => return problem.to_string(),
        },
    };
    format!("{json}: {msg}")
}

#[cfg(test)]
mod tests;
