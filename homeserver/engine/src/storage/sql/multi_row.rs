//! Multi-row statements: many rows in one `INSERT ... VALUES (...), (...)` or
//! one `IN (...)` list.
//!
//! On SQLite every statement is a round trip to the connection's worker
//! thread, and that hand-off costs more than the statement itself; joining a
//! room with 10,000 members over federation wrote its state one row at a time
//! and spent a quarter of its time there. Grouping rows cuts the round trips
//! by the chunk size. Placeholders are `$n` on PostgreSQL and `?` on SQLite
//! (see [`numbered`]); a chunk stays well below either database's limit on bound
//! parameters (32,766 on SQLite, 65,535 on PostgreSQL).

use sqlx::AnyPool;

/// Bound parameters per statement at most.
const MAX_PARAMS: usize = 4_000;

/// How many rows of `params_per_row` parameters one statement may carry.
pub(super) fn rows_per_chunk(params_per_row: usize) -> usize {
    (MAX_PARAMS / params_per_row.max(1)).max(1)
}

/// Whether statements on `pool` take numbered placeholders (`$1`, PostgreSQL)
/// rather than anonymous ones (`?`, SQLite). SQLite does accept `$1`, but as a
/// named parameter: sqlx then looks each name up, and SQLite finds a name by
/// a linear scan, so binding n named parameters costs n² (a quarter of a
/// large join's CPU time went there). Anonymous ones bind in order.
pub(super) fn numbered(pool: &AnyPool) -> bool {
    pool.connect_options().database_url.scheme() != "sqlite"
}

/// `rows` copies of `row`, comma-separated, with each `?` in `row` replaced by
/// a placeholder: the next `$n` starting at `$first` when `numbered`
/// (`values("(?, 0, ?)", 2, 1, true)` is `($1, 0, $2), ($3, 0, $4)`), or left
/// as `?`.
pub(super) fn values(row: &str, rows: usize, first: usize, numbered: bool) -> String {
    let mut out = String::with_capacity(rows * (row.len() + 8));
    let mut n = first;
    for i in 0..rows {
        if i > 0 {
            out.push_str(", ");
        }
        if !numbered {
            out.push_str(row);
            continue;
        }
        for c in row.chars() {
            if c == '?' {
                out.push('$');
                out.push_str(&n.to_string());
                n += 1;
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Keeps the last of the items with the same key, in their original order
/// otherwise. A multi-row upsert must not touch one row twice (PostgreSQL
/// refuses "ON CONFLICT DO UPDATE command cannot affect row a second time"),
/// and writing only the last is what writing them one by one would leave.
pub(super) fn last_per_key<'a, T, K: Eq + std::hash::Hash>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut last = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item), i);
    }
    items
        .iter()
        .enumerate()
        .filter(|(i, item)| last.get(&key(item)) == Some(i))
        .map(|(_, item)| item)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_across_rows() {
        assert_eq!(values("(?, 0, ?)", 2, 1, true), "($1, 0, $2), ($3, 0, $4)");
        assert_eq!(values("(?)", 1, 7, true), "($7)");
        assert_eq!(values("(?)", 0, 1, true), "");
        assert_eq!(values("(?, 0, ?)", 2, 1, false), "(?, 0, ?), (?, 0, ?)");
    }

    #[test]
    fn chunks_stay_under_the_parameter_limit() {
        assert_eq!(rows_per_chunk(10) * 10, MAX_PARAMS);
        assert_eq!(rows_per_chunk(0), MAX_PARAMS);
        assert_eq!(rows_per_chunk(MAX_PARAMS * 2), 1);
    }

    #[test]
    fn the_last_of_each_key_wins() {
        let items = [("a", 1), ("b", 2), ("a", 3), ("c", 4)];
        let kept: Vec<_> = last_per_key(&items, |(k, _)| *k).into_iter().collect();
        assert_eq!(kept, vec![&("b", 2), &("a", 3), &("c", 4)]);
    }
}
