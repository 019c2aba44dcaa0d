//! Which servers may federate with us: `[federation] allow` and `deny`.
//!
//! Patterns are globs over server names (`*` any run of characters, `?` one
//! character), compared case-insensitively. An empty allow list allows
//! everyone; the deny list is checked after it, so a server matched by both is
//! denied. Room-level ACLs (`m.room.server_acl`) are a separate, per-room check.

use ruma::ServerName;

#[derive(Clone, Debug, Default)]
pub struct ServerAccess {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl ServerAccess {
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        let lower = |v: &[String]| v.iter().map(|p| p.to_ascii_lowercase()).collect();
        Self {
            allow: lower(allow),
            deny: lower(deny),
        }
    }

    pub fn from_config(config: &crate::config::Federation) -> Self {
        Self::new(&config.allow, &config.deny)
    }

    /// Whether `server` may talk to us and we to it.
    pub fn is_allowed(&self, server: &ServerName) -> bool {
        let name = server.as_str().to_ascii_lowercase();
        let allowed = self.allow.is_empty() || self.allow.iter().any(|p| glob_match(p, &name));
        allowed && !self.deny.iter().any(|p| glob_match(p, &name))
    }
}

/// `*` and `?` glob matching, iterative with backtracking to the last `*`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything.org"));
        assert!(glob_match("*.example.org", "hs.example.org"));
        assert!(!glob_match("*.example.org", "example.org"));
        assert!(glob_match("hs?.test", "hs2.test"));
        assert!(!glob_match("hs?.test", "hs22.test"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn allow_then_deny() {
        let name = |s| ServerName::parse(s).unwrap();
        let open = ServerAccess::new(&[], &["evil.org".into(), "*.evil.org".into()]);
        assert!(open.is_allowed(&name("good.org")));
        assert!(!open.is_allowed(&name("EVIL.org")));
        assert!(!open.is_allowed(&name("a.evil.org")));
        let closed = ServerAccess::new(&["*.test".into()], &["hs3.test".into()]);
        assert!(closed.is_allowed(&name("hs1.test")));
        assert!(!closed.is_allowed(&name("hs3.test")));
        assert!(!closed.is_allowed(&name("other.org")));
    }
}
