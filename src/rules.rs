//! Per-room options chosen by room-name pattern: how much history a room
//! keeps, for how long, and whether it tracks presence.
//!
//! Rules are tried in the order they are written; the first whose pattern
//! matches decides, and a setting a rule leaves out falls back to the flat
//! default (`history_size`, `history_ttl`, `presence`, `join_leave`). A room
//! resolves its options once, when its state is created, so matching costs
//! nothing per publication.

use std::time::Duration;

use serde::Deserialize;

/// A room-name pattern: `*` stands for any run of characters (dots
/// included, possibly none); every other character stands for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_owned())
    }

    /// Whether `name` matches. Linear in practice: on a mismatch after a
    /// `*`, only the last star is retried one character further.
    pub fn matches(&self, name: &str) -> bool {
        let (p, n) = (self.0.as_bytes(), name.as_bytes());
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ni));
                pi += 1;
            } else if pi < p.len() && p[pi] == n[ni] {
                pi += 1;
                ni += 1;
            } else if let Some((sp, sn)) = star {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a room keeps, resolved from the rules and the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomOptions {
    /// Publications kept for history and recovery; 0 keeps none.
    pub history_size: usize,
    /// How long a kept publication stays.
    pub history_ttl: Duration,
    /// Whether `presence` and `presence_stats` answer for the room.
    pub presence: bool,
    /// Whether subscribers may ask for join and leave events.
    pub join_leave: bool,
}

impl RoomOptions {
    pub fn keeps_history(&self) -> bool {
        self.history_size > 0
    }
}

/// One `[[rooms]]` entry as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: String,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    subscribe_roles: Option<Vec<String>>,
    publish_roles: Option<Vec<String>>,
}

/// One rule: a pattern and the options it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRule {
    pub pattern: Glob,
    pub history_size: Option<usize>,
    pub history_ttl: Option<Duration>,
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    /// Subscribing (and reading history) needs one of these `role` claims.
    pub subscribe_roles: Option<Vec<String>>,
    /// Publishing needs one of these `role` claims.
    pub publish_roles: Option<Vec<String>>,
}

/// The configured rules, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomRules(pub Vec<RoomRule>);

impl RoomRules {
    /// Parses the TOML array form, e.g.
    /// `[{ match = "ticks.*", history_size = 1000, history_ttl = "5m" }]`.
    pub fn parse(text: &str) -> Result<RoomRules, String> {
        #[derive(Deserialize)]
        struct Doc {
            rooms: Vec<RawRule>,
        }
        let doc: Doc = toml::from_str(&format!("rooms = {text}")).map_err(|e| {
            format!(
                "{} (expected e.g. [{{ match = \"ticks.*\", history_size = 1000, history_ttl = \"5m\" }}])",
                e.message()
            )
        })?;
        let mut rules = Vec::with_capacity(doc.rooms.len());
        for raw in doc.rooms {
            if raw.pattern.is_empty() {
                return Err("a rule's `match` pattern is empty".to_owned());
            }
            let history_ttl = match raw.history_ttl {
                Some(text) => {
                    let ttl = humantime::parse_duration(&text).map_err(|e| {
                        format!(
                            "rule {:?}: history_ttl: {e} (expected e.g. 5m)",
                            raw.pattern
                        )
                    })?;
                    if ttl.is_zero() {
                        return Err(format!(
                            "rule {:?}: history_ttl must be longer than zero",
                            raw.pattern
                        ));
                    }
                    Some(ttl)
                }
                None => None,
            };
            rules.push(RoomRule {
                pattern: Glob::new(&raw.pattern),
                history_size: raw.history_size,
                history_ttl,
                presence: raw.presence,
                join_leave: raw.join_leave,
                subscribe_roles: raw.subscribe_roles,
                publish_roles: raw.publish_roles,
            });
        }
        Ok(RoomRules(rules))
    }

    /// The roles the first matching rule requires to subscribe to
    /// (`publish`: false) or publish to (`publish`: true) `room`, if any.
    pub fn required_roles(&self, room: &str, publish: bool) -> Option<&[String]> {
        let rule = self.0.iter().find(|r| r.pattern.matches(room))?;
        let roles = if publish {
            &rule.publish_roles
        } else {
            &rule.subscribe_roles
        };
        roles.as_deref()
    }

    /// Whether any rule requires roles (if none does, no check is needed).
    pub fn has_role_rules(&self) -> bool {
        self.0
            .iter()
            .any(|r| r.subscribe_roles.is_some() || r.publish_roles.is_some())
    }

    /// The options of `room`: the first matching rule over `defaults`.
    pub fn resolve(&self, room: &str, defaults: RoomOptions) -> RoomOptions {
        let Some(rule) = self.0.iter().find(|r| r.pattern.matches(room)) else {
            return defaults;
        };
        let presence = rule.presence.unwrap_or(defaults.presence);
        RoomOptions {
            history_size: rule.history_size.unwrap_or(defaults.history_size),
            history_ttl: rule.history_ttl.unwrap_or(defaults.history_ttl),
            presence,
            // Join and leave events come from presence tracking.
            join_leave: presence && rule.join_leave.unwrap_or(defaults.join_leave),
        }
    }
}

/// Which options each room gets: the rules over the flat defaults. The one
/// place a room's options are decided: the node builds it once from the
/// configuration, and the member checks and every core's engine ask it.
#[derive(Debug, Clone)]
pub(crate) struct RoomPolicy {
    rules: RoomRules,
    defaults: RoomOptions,
}

impl RoomPolicy {
    pub(crate) fn new(rules: RoomRules, defaults: RoomOptions) -> RoomPolicy {
        RoomPolicy { rules, defaults }
    }

    /// The options of `room`: the first matching rule over the defaults.
    pub(crate) fn options(&self, room: &str) -> RoomOptions {
        self.rules.resolve(room, self.defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_of_characters_and_nothing_else_is_special() {
        let g = Glob::new("ticks.*");
        assert!(g.matches("ticks.btc"));
        assert!(g.matches("ticks."));
        assert!(g.matches("ticks.a.b"));
        assert!(!g.matches("tick.btc"));
        assert!(!g.matches("xticks.btc"));
        assert!(Glob::new("*.eu.*").matches("ticks.eu.btc"));
        assert!(!Glob::new("*.eu.*").matches("ticks.us.btc"));
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("a*b*c").matches("aXbYbZc"));
        assert!(!Glob::new("a*b*c").matches("aXbYbZ"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exactly"));
    }

    #[test]
    fn the_first_matching_rule_wins_and_unset_fields_fall_back_to_the_defaults() {
        let rules = RoomRules::parse(
            r#"[{ match = "ticks.*", history_size = 1000, history_ttl = "5m" },
                { match = "*", presence = true, join_leave = true }]"#,
        )
        .unwrap();
        let defaults = RoomOptions {
            history_size: 0,
            history_ttl: Duration::from_secs(60),
            presence: false,
            join_leave: false,
        };
        let ticks = rules.resolve("ticks.btc", defaults);
        assert_eq!(ticks.history_size, 1000);
        assert_eq!(ticks.history_ttl, Duration::from_secs(300));
        assert!(!ticks.presence);
        let chat = rules.resolve("chat", defaults);
        assert_eq!(chat.history_size, 0);
        assert!(chat.presence && chat.join_leave);
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        assert!(RoomRules::parse("[{ history_size = 1 }]").is_err());
        assert!(RoomRules::parse(r#"[{ match = "a", histroy_size = 1 }]"#).is_err());
        assert!(
            RoomRules::parse(r#"[{ match = "a", history_ttl = "soon" }]"#)
                .unwrap_err()
                .contains("history_ttl")
        );
        assert!(RoomRules::parse(r#"[{ match = "a", history_ttl = "0s" }]"#).is_err());
        assert_eq!(RoomRules::parse("[]").unwrap(), RoomRules::default());
    }
}
