//! Printing: aligned tables and `key: value` lists for people, the server's
//! JSON verbatim (`--json`) for scripts, and the confirmation prompt of
//! destructive commands.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use serde_json::Value;

/// How to print answers.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    /// `--yes`: destructive commands do not ask.
    pub yes: bool,
}

impl Output {
    /// Prints `value` as JSON, or calls `human` to print it for people.
    pub fn show(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
            );
        } else {
            human(value);
        }
    }

    /// Asks before a destructive action unless `--yes` was given. Without a
    /// terminal answer (empty stdin), the answer is no.
    pub fn confirm(&self, action: &str) -> Result<()> {
        if self.yes {
            return Ok(());
        }
        eprint!("{action}. Continue? [y/N] ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if matches!(line.trim().to_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            bail!("aborted (pass --yes to skip this question)")
        }
    }
}

/// A cell: strings bare, null as `-`, everything else as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows of `items` under `columns` (`(header, field)`), aligned.
pub fn table(items: &[Value], columns: &[(&str, &str)]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, f)| cell(&item[*f])).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

/// Prints an object's fields as `key: value`, one per line.
pub fn fields(v: &Value) {
    if let Some(obj) = v.as_object() {
        let width = obj.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, val) in obj {
            println!("{k:<width$}  {}", cell(val));
        }
    } else {
        println!("{}", cell(v));
    }
}
