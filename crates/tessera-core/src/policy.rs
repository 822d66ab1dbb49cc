//! The administrator's usage policy (FlexNet's options file): groups of
//! users and of hosts, and per feature who may use it (`include`) and who
//! may not (`exclude`). It lives in the pool file's `[policy]` tables, so it
//! is replicated, versioned and changed live with the pool file, and an
//! invalid one is refused with the rule's line and the reason.
//!
//! ```toml
//! [policy.groups]                 # GROUP
//! design = ["alice", "bob"]
//! [policy.host_groups]            # HOST_GROUP
//! lab = ["ws1", "ws2"]
//! [policy.features.cad]
//! include = ["group:design", "address:10.1.0.0/16"]   # INCLUDE
//! exclude = ["user:mallory", "host_group:lab"]        # EXCLUDE
//! reserve = ["2 group:design"]                         # RESERVE
//! max = ["1 user:bob", "3 host_group:lab"]             # MAX
//! linger_s = 30                                        # LINGER
//! idle_timeout_s = 3600                                # TIMEOUT
//! ```
//!
//! An exclusion wins over an inclusion; a feature with any `include` rule
//! admits only those it names. `include` and `exclude` may also name a
//! program's display (`display::0`, `display:/dev/pts/3`), as FlexNet's
//! DISPLAY does.
//!
//! `reserve` and `max` hold across the pool, not per server: every grant of
//! a feature with either is recorded in the pool's log as a [`Claim`] before
//! it is issued, and [`Policy::check_claim`] judges the claims alike on
//! every server. A reserve keeps its seats from everyone it does not name
//! (each asker counts against the first reserve that names them, and takes
//! from the unreserved seats once that reserve is used up); a max bounds
//! what all those its rule names hold together.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::names::check_name;

/// Most names in one group, and most rules of one feature.
pub const GROUP_MEMBERS_MAX: usize = 10_000;
pub const RULES_MAX: usize = 1_000;
/// Longest linger: a day.
pub const LINGER_S_MAX: u32 = 86_400;
/// Shortest and longest idle timeout. FlexNet's TIMEOUT takes no less than
/// 15 minutes; Tessera leaves the choice to the administrator, down to a
/// minute, since the seat is only freed on a heartbeat that reports the
/// idle time anyway.
pub const IDLE_TIMEOUT_S_MIN: u32 = 60;
pub const IDLE_TIMEOUT_S_MAX: u32 = 30 * 86_400;

/// The `[policy]` tables as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_groups: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, FeaturePolicyText>,
}

/// `[policy.features.FEATURE]` as written; each rule keeps its place in
/// the file for the messages that name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturePolicyText {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<toml::Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<toml::Spanned<String>>,
    /// Seconds a seat stays held after its check-in (FlexNet's LINGER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linger_s: Option<u32>,
    /// Seconds a program may be idle, as its SDK reports, before its seat
    /// is freed (FlexNet's TIMEOUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u32>,
    /// `"N RULE"`: N seats kept for those RULE names (FlexNet's RESERVE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserve: Vec<toml::Spanned<String>>,
    /// `"N RULE"`: those RULE names hold at most N seats together (MAX).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max: Vec<toml::Spanned<String>>,
}

/// Whom a rule names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    User(String),
    Group(String),
    Host(String),
    HostGroup(String),
    /// An address range: the address and the length of its prefix.
    Address(IpAddr, u8),
    /// A program's display (`include` and `exclude` only).
    Display(String),
}

/// One rule: whom it names, as written, and its line in the pool file
/// (0 when not known).
#[derive(Clone, Debug)]
pub struct Rule {
    pub who: Who,
    pub text: String,
    pub line: usize,
}

impl PartialEq for Rule {
    /// The same rule wherever it stands in the file.
    fn eq(&self, other: &Rule) -> bool {
        self.who == other.who && self.text == other.text
    }
}

impl Eq for Rule {}

/// A `reserve` or `max` rule: a number of seats and whom they concern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub seats: u32,
    pub rule: Rule,
}

/// The rules of one feature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeaturePolicy {
    pub include: Vec<Rule>,
    pub exclude: Vec<Rule>,
    /// Seconds a seat stays held after its check-in, for programs that
    /// start and stop often; 0: none.
    pub linger_s: u32,
    /// Seconds a program may be idle before its seat is freed; 0: never.
    pub idle_timeout_s: u32,
    pub reserve: Vec<Limit>,
    pub max: Vec<Limit>,
}

/// A `reserve` or `max` rule and the seats held by whom it counts.
pub type LimitHeld<'a> = (&'a Limit, u64);

/// Why a claim is refused: a `max` reached, or the free seats reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    Max(String),
    Reserved(String),
}

/// Seats held under one grant of a feature with `reserve` or `max` rules,
/// as the pool's log records them: whose they are, so that every server
/// judges the rules alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub user: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    pub seats: u32,
    /// The server that holds the grant.
    pub server: String,
    /// The newest heartbeat of the grant that `server`'s copy had answered
    /// when it claimed (0 for a checkout): a claim moves only to a copy
    /// renewed as late or later, so a copy left behind by a fail-over never
    /// takes it back from the one its program renews.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub renewal: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Claim {
    pub fn asker(&self) -> Asker<'_> {
        Asker {
            user: &self.user,
            host: &self.host,
            address: self.address,
            display: None,
        }
    }
}

/// The parsed policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub groups: BTreeMap<String, Vec<String>>,
    pub host_groups: BTreeMap<String, Vec<String>>,
    pub features: BTreeMap<String, FeaturePolicy>,
}

/// Who asks for a seat: the request's user and host, and the address the
/// request came from (none where the transport gives none).
#[derive(Clone, Copy, Debug)]
pub struct Asker<'a> {
    pub user: &'a str,
    pub host: &'a str,
    pub address: Option<IpAddr>,
    /// The program's display, where it sent one.
    pub display: Option<&'a str>,
}

impl Policy {
    /// Parses and checks `text` (the `[policy]` tables) of the pool file
    /// `file`, whose text gives the rules their line numbers.
    pub fn from_text(text: &PolicyText, file: &str) -> Result<Policy, String> {
        for (what, groups) in [("group", &text.groups), ("host group", &text.host_groups)] {
            for (name, members) in groups {
                check_name(what, name)?;
                if members.len() > GROUP_MEMBERS_MAX {
                    return Err(format!(
                        "{what} `{name}` has {} members; the limit is {GROUP_MEMBERS_MAX}",
                        members.len()
                    ));
                }
                for member in members {
                    check_name(&format!("a member of {what} `{name}`"), member)?;
                }
            }
        }
        let mut features = BTreeMap::new();
        for (feature, rules) in &text.features {
            let parse = |list: &[toml::Spanned<String>], kind: &str| {
                if list.len() > RULES_MAX {
                    return Err(format!(
                        "feature `{feature}` has {} {kind} rules; the limit is {RULES_MAX}",
                        list.len()
                    ));
                }
                list.iter()
                    .map(|rule| {
                        let line = line_of(file, rule.span().start);
                        parse_rule(rule.get_ref(), text)
                            .map(|who| Rule {
                                who,
                                text: rule.get_ref().clone(),
                                line,
                            })
                            .map_err(|reason| {
                                format!("line {line}: {kind} rule \"{}\": {reason}", rule.get_ref())
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let linger_s = rules.linger_s.unwrap_or(0);
            if linger_s > LINGER_S_MAX {
                return Err(format!(
                    "feature `{feature}`: linger_s is {linger_s}; it must be at most \
                     {LINGER_S_MAX}"
                ));
            }
            let idle_timeout_s = rules.idle_timeout_s.unwrap_or(0);
            if rules.idle_timeout_s.is_some()
                && !(IDLE_TIMEOUT_S_MIN..=IDLE_TIMEOUT_S_MAX).contains(&idle_timeout_s)
            {
                return Err(format!(
                    "feature `{feature}`: idle_timeout_s is {idle_timeout_s}; it must be from \
                     {IDLE_TIMEOUT_S_MIN} to {IDLE_TIMEOUT_S_MAX} seconds"
                ));
            }
            let limits = |list: &[toml::Spanned<String>], kind: &str| {
                if list.len() > RULES_MAX {
                    return Err(format!(
                        "feature `{feature}` has {} {kind} rules; the limit is {RULES_MAX}",
                        list.len()
                    ));
                }
                list.iter()
                    .map(|rule| {
                        let line = line_of(file, rule.span().start);
                        parse_limit(rule.get_ref(), text)
                            .map(|(seats, who, rule_text)| Limit {
                                seats,
                                rule: Rule {
                                    who,
                                    text: rule_text,
                                    line,
                                },
                            })
                            .map_err(|reason| {
                                format!("line {line}: {kind} rule \"{}\": {reason}", rule.get_ref())
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            features.insert(
                feature.clone(),
                FeaturePolicy {
                    include: parse(&rules.include, "include")?,
                    exclude: parse(&rules.exclude, "exclude")?,
                    linger_s,
                    idle_timeout_s,
                    reserve: limits(&rules.reserve, "reserve")?,
                    max: limits(&rules.max, "max")?,
                },
            );
        }
        Ok(Policy {
            groups: text.groups.clone(),
            host_groups: text.host_groups.clone(),
            features,
        })
    }

    /// The policy as the pool file writes it.
    pub fn to_text(&self) -> PolicyText {
        let spanned = |rules: &[Rule]| {
            rules
                .iter()
                .map(|r| toml::Spanned::new(0..0, r.text.clone()))
                .collect()
        };
        PolicyText {
            groups: self.groups.clone(),
            host_groups: self.host_groups.clone(),
            features: self
                .features
                .iter()
                .map(|(feature, p)| {
                    let limits = |limits: &[Limit]| {
                        limits
                            .iter()
                            .map(|l| {
                                toml::Spanned::new(0..0, format!("{} {}", l.seats, l.rule.text))
                            })
                            .collect()
                    };
                    let text = FeaturePolicyText {
                        include: spanned(&p.include),
                        exclude: spanned(&p.exclude),
                        linger_s: (p.linger_s > 0).then_some(p.linger_s),
                        idle_timeout_s: (p.idle_timeout_s > 0).then_some(p.idle_timeout_s),
                        reserve: limits(&p.reserve),
                        max: limits(&p.max),
                    };
                    (feature.clone(), text)
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.host_groups.is_empty() && self.features.is_empty()
    }

    /// How long a seat of `feature` stays held after its check-in, in ms.
    pub fn linger_ms(&self, feature: &str) -> u64 {
        self.features
            .get(feature)
            .map_or(0, |p| u64::from(p.linger_s) * 1_000)
    }

    /// How long a program may be idle before its seat of `feature` is
    /// freed, in ms; `None`: no idle timeout.
    pub fn idle_timeout_ms(&self, feature: &str) -> Option<u64> {
        self.features
            .get(feature)
            .filter(|p| p.idle_timeout_s > 0)
            .map(|p| u64::from(p.idle_timeout_s) * 1_000)
    }

    /// True if `feature` has `reserve` or `max` rules: its grants are
    /// claimed through the pool's log ([`Claim`]).
    pub fn counts(&self, feature: &str) -> bool {
        self.features
            .get(feature)
            .is_some_and(|p| !p.reserve.is_empty() || !p.max.is_empty())
    }

    /// Seats the `reserve` rules of `feature` keep, together.
    pub fn reserved_seats(&self, feature: &str) -> u64 {
        self.features
            .get(feature)
            .map_or(0, |p| p.reserve.iter().map(|l| u64::from(l.seats)).sum())
    }

    /// Whether `new` may hold its seats of `feature` besides `held` (the
    /// claims and temporary licenses recorded, never `new` itself), out of
    /// `total` seats. A `max` bounds what those its rule names hold
    /// together. A `reserve` keeps its seats from everyone else: each
    /// holder counts against the first reserve that names them, and what a
    /// reserve's holders hold beyond it comes out of the unreserved seats,
    /// so the held seats, with each reserve's unused part counted as held,
    /// stay within `total`. Refused: why, naming the rule and its line.
    pub fn check_claim<'a>(
        &self,
        feature: &str,
        total: u32,
        held: impl Iterator<Item = (Asker<'a>, u32)> + Clone,
        new: (Asker<'a>, u32),
    ) -> Result<(), ClaimRefused> {
        let Some(rules) = self.features.get(feature) else {
            return Ok(());
        };
        let (asker, seats) = new;
        for limit in &rules.max {
            if !self.names(&limit.rule.who, &asker) {
                continue;
            }
            let holding: u64 = held
                .clone()
                .filter(|(a, _)| self.names(&limit.rule.who, a))
                .map(|(_, n)| u64::from(n))
                .sum();
            if holding + u64::from(seats) > u64::from(limit.seats) {
                return Err(ClaimRefused::Max(format!(
                    "{} is refused {seats} seat(s) of `{feature}`: those \"{}\" names hold {holding} \
                     already, and the pool's policy allows them {} (max \"{} {}\"{})",
                    describe(&asker),
                    limit.rule.text,
                    limit.seats,
                    limit.seats,
                    limit.rule.text,
                    at_line(limit.rule.line)
                )));
            }
        }
        if rules.reserve.is_empty() {
            return Ok(());
        }
        let cover = |a: &Asker| {
            rules
                .reserve
                .iter()
                .position(|l| self.names(&l.rule.who, a))
        };
        let mut per_reserve = vec![0u64; rules.reserve.len()];
        let mut others = 0u64;
        for (a, n) in held.chain(std::iter::once((asker, seats))) {
            match cover(&a) {
                Some(r) => per_reserve[r] += u64::from(n),
                None => others += u64::from(n),
            }
        }
        let counted: u64 = others
            + rules
                .reserve
                .iter()
                .zip(&per_reserve)
                .map(|(l, &h)| h.max(u64::from(l.seats)))
                .sum::<u64>();
        if counted > u64::from(total) {
            let kept: Vec<String> = rules
                .reserve
                .iter()
                .zip(&per_reserve)
                .filter(|(l, &h)| h < u64::from(l.seats))
                .map(|(l, &h)| {
                    format!(
                        "{} for \"{}\" (reserve \"{} {}\"{})",
                        u64::from(l.seats) - h,
                        l.rule.text,
                        l.seats,
                        l.rule.text,
                        at_line(l.rule.line)
                    )
                })
                .collect();
            return Err(ClaimRefused::Reserved(format!(
                "no seats of `{feature}` free for {}: of its {total} seats, those not held are \
                 kept by the pool's policy, {}",
                describe(&asker),
                kept.join(" and ")
            )));
        }
        Ok(())
    }

    /// Per `reserve` and per `max` rule of `feature`: its seats and those
    /// held by whom it counts (a reserve: those it is the first to name).
    pub fn limits_held<'a>(
        &self,
        feature: &str,
        held: impl Iterator<Item = (Asker<'a>, u32)> + Clone,
    ) -> (Vec<LimitHeld<'_>>, Vec<LimitHeld<'_>>) {
        let Some(rules) = self.features.get(feature) else {
            return (Vec::new(), Vec::new());
        };
        let reserves = rules
            .reserve
            .iter()
            .enumerate()
            .map(|(i, limit)| {
                let first = |a: &Asker| {
                    rules
                        .reserve
                        .iter()
                        .position(|l| self.names(&l.rule.who, a))
                        == Some(i)
                };
                let sum = held
                    .clone()
                    .filter(|(a, _)| first(a))
                    .map(|(_, n)| u64::from(n))
                    .sum();
                (limit, sum)
            })
            .collect();
        let maxima = rules
            .max
            .iter()
            .map(|limit| {
                let sum = held
                    .clone()
                    .filter(|(a, _)| self.names(&limit.rule.who, a))
                    .map(|(_, n)| u64::from(n))
                    .sum();
                (limit, sum)
            })
            .collect();
        (reserves, maxima)
    }

    /// Whether `asker` may use `feature`; if not, which rule says so.
    pub fn admits(&self, feature: &str, asker: &Asker) -> Result<(), String> {
        let Some(rules) = self.features.get(feature) else {
            return Ok(());
        };
        if let Some(rule) = rules.exclude.iter().find(|r| self.names(&r.who, asker)) {
            return Err(format!(
                "{} is excluded from `{feature}` by the pool's policy (exclude \"{}\"{})",
                describe(asker),
                rule.text,
                at_line(rule.line)
            ));
        }
        if !rules.include.is_empty() && !rules.include.iter().any(|r| self.names(&r.who, asker)) {
            return Err(format!(
                "{} is not among those the pool's policy includes for `{feature}` ({})",
                describe(asker),
                rules
                    .include
                    .iter()
                    .map(|r| format!("\"{}\"", r.text))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    fn names(&self, who: &Who, asker: &Asker) -> bool {
        let member = |groups: &BTreeMap<String, Vec<String>>, group: &str, name: &str| {
            groups
                .get(group)
                .is_some_and(|members| members.iter().any(|m| m == name))
        };
        match who {
            Who::User(user) => user == asker.user,
            Who::Host(host) => host == asker.host,
            Who::Group(group) => member(&self.groups, group, asker.user),
            Who::HostGroup(group) => member(&self.host_groups, group, asker.host),
            Who::Address(range, prefix) => asker
                .address
                .is_some_and(|address| in_range(address, *range, *prefix)),
            Who::Display(display) => asker.display == Some(display.as_str()),
        }
    }
}

fn describe(asker: &Asker) -> String {
    let mut out = format!("user `{}` on host `{}`", asker.user, asker.host);
    if let Some(display) = asker.display {
        out.push_str(&format!(" at display `{display}`"));
    }
    if let Some(address) = asker.address {
        out.push_str(&format!(" ({address})"));
    }
    out
}

fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(", line {line} of the pool file")
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn parse_rule(rule: &str, policy: &PolicyText) -> Result<Who, String> {
    let (kind, name) = rule.split_once(':').ok_or_else(|| {
        "a rule is `user:NAME`, `group:NAME`, `host:NAME`, `host_group:NAME`, \
         `address:ADDRESS/PREFIX` or `display:DISPLAY`"
            .to_string()
    })?;
    match kind {
        "user" => check_name("user", name).map(|()| Who::User(name.to_string())),
        "host" => check_name("host", name).map(|()| Who::Host(name.to_string())),
        "group" if policy.groups.contains_key(name) => Ok(Who::Group(name.to_string())),
        "group" => Err(format!("no group `{name}` in [policy.groups]")),
        "host_group" if policy.host_groups.contains_key(name) => {
            Ok(Who::HostGroup(name.to_string()))
        }
        "host_group" => Err(format!("no host group `{name}` in [policy.host_groups]")),
        "address" => parse_range(name),
        "display" => check_display(name).map(|()| Who::Display(name.to_string())),
        _ => Err(format!(
            "`{kind}` is not a kind of rule; the kinds are user, group, host, host_group, \
             address, display"
        )),
    }
}

/// `"N RULE"` of a `reserve` or `max`: the seats, whom, and the rule as written.
fn parse_limit(text: &str, policy: &PolicyText) -> Result<(u32, Who, String), String> {
    let shape = "a reserve or max rule is `N RULE`, such as \"2 group:design\"";
    let (seats, rule) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| shape.to_string())?;
    let seats: u32 = seats
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{seats}` is not a number of seats above 0; {shape}"))?;
    let rule = rule.trim();
    match parse_rule(rule, policy)? {
        // A grant's claim, which the pool's log keeps for every server to
        // count, records user, host and address, not the display.
        Who::Display(_) => Err(
            "a display names who may use a feature (include, exclude); reserve and max count \
             users, groups, hosts and addresses"
                .to_string(),
        ),
        who => Ok((seats, who, rule.to_string())),
    }
}

/// A display as a rule names it: `:0`, `ws1:0.0`, `/dev/pts/3`.
fn check_display(display: &str) -> Result<(), String> {
    if display.is_empty() || display.len() > crate::names::NAME_BYTES_MAX {
        return Err(format!(
            "a display is 1 to {} bytes long",
            crate::names::NAME_BYTES_MAX
        ));
    }
    if display.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "display `{display}` contains a space or a control character"
        ));
    }
    Ok(())
}

/// `ADDRESS/PREFIX` (or one address), IPv4 or IPv6.
fn parse_range(text: &str) -> Result<Who, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(prefix) => prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| format!("the prefix `/{prefix}` is not 0 to {bits}"))?,
    };
    Ok(Who::Address(address, prefix))
}

fn in_range(address: IpAddr, range: IpAddr, prefix: u8) -> bool {
    // An IPv4 client seen through an IPv6 socket is the IPv4 address.
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    };
    let bits = |a: IpAddr| -> (u128, u8) {
        match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let ((a, a_len), (r, r_len)) = (bits(address), bits(range));
    if a_len != r_len {
        return false;
    }
    let shift = u32::from(a_len - prefix.min(a_len));
    let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
    (a & mask) == (r & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        #[derive(Deserialize)]
        struct File {
            policy: PolicyText,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Policy::from_text(&file.policy, text)
    }

    const POLICY: &str = "\
[policy.groups]
design = [\"alice\", \"bob\"]
[policy.host_groups]
lab = [\"ws1\", \"ws2\"]
[policy.features.cad]
include = [\"group:design\", \"address:10.1.0.0/16\"]
exclude = [\"user:bob\", \"host_group:lab\"]
";

    fn asker<'a>(user: &'a str, host: &'a str, address: &str) -> Asker<'a> {
        Asker {
            user,
            host,
            address: address.parse().ok(),
            display: None,
        }
    }

    /// FlexNet's DISPLAY: a program's display, in `include` and `exclude`
    /// only; a reserve or max naming one is refused, since claims record
    /// no display.
    #[test]
    fn a_display_is_included_or_excluded_by_name() {
        let p = policy(
            "[policy.features.cad]\nexclude = [\"display:/dev/pts/3\"]\n\
             [policy.features.cam]\ninclude = [\"display::0\"]\n",
        )
        .unwrap();
        let at = |display| Asker {
            display,
            ..asker("alice", "pc", "")
        };
        let err = p.admits("cad", &at(Some("/dev/pts/3"))).unwrap_err();
        assert!(
            err.contains("user `alice` on host `pc` at display `/dev/pts/3` is excluded")
                && err.contains("exclude \"display:/dev/pts/3\""),
            "{err}"
        );
        assert_eq!(p.admits("cad", &at(Some("/dev/pts/4"))), Ok(()));
        assert_eq!(p.admits("cad", &at(None)), Ok(()));
        assert_eq!(p.admits("cam", &at(Some(":0"))), Ok(()));
        assert!(
            p.admits("cam", &at(None)).is_err(),
            "no display, not included"
        );
        let err = policy("[policy.features.cad]\nmax = [\"1 display::0\"]\n").unwrap_err();
        assert!(
            err.contains("max rule \"1 display::0\": a display names who may use a feature"),
            "{err}"
        );
        let err = policy("[policy.features.cad]\nexclude = [\"display:a b\"]\n").unwrap_err();
        assert!(err.contains("contains a space"), "{err}");
    }

    #[test]
    fn exclusions_win_and_inclusions_admit_only_those_named() {
        let p = policy(POLICY).unwrap();
        assert_eq!(
            p.admits("cad", &asker("alice", "pc", "192.168.0.1")),
            Ok(())
        );
        assert_eq!(p.admits("cad", &asker("carol", "pc", "10.1.200.3")), Ok(()));
        assert_eq!(
            p.admits("cad", &asker("carol", "pc", "::ffff:10.1.0.9")),
            Ok(()),
            "an IPv4 client on an IPv6 socket"
        );
        let bob = p
            .admits("cad", &asker("bob", "pc", "10.1.0.1"))
            .unwrap_err();
        assert!(bob.contains("exclude \"user:bob\", line 7"), "{bob}");
        let lab = p.admits("cad", &asker("alice", "ws2", "")).unwrap_err();
        assert!(lab.contains("host_group:lab"), "{lab}");
        let carol = p
            .admits("cad", &asker("carol", "pc", "10.2.0.1"))
            .unwrap_err();
        assert!(
            carol.contains("not among those the pool's policy includes for `cad`"),
            "{carol}"
        );
        assert_eq!(
            p.admits("cam", &asker("bob", "ws1", "")),
            Ok(()),
            "no rules"
        );
    }

    #[test]
    fn invalid_rules_are_refused_with_their_line_and_reason() {
        for (rule, expected) in [
            (
                "\"group:ops\"",
                "line 6: include rule \"group:ops\": no group `ops`",
            ),
            ("\"person:x\"", "`person` is not a kind of rule"),
            ("\"alice\"", "a rule is `user:NAME`"),
            ("\"address:10.1.0.0/33\"", "the prefix `/33` is not 0 to 32"),
            ("\"address:10.1.0\"", "`10.1.0` is not an IP address"),
            ("\"host_group:nope\"", "no host group `nope`"),
        ] {
            let text = POLICY.replace("\"group:design\"", rule);
            let err = policy(&text).unwrap_err();
            assert!(err.contains(expected), "{rule}: {err}");
        }
        let err = policy(&format!("{POLICY}linger_s = 86401\n")).unwrap_err();
        assert!(
            err.contains("linger_s is 86401; it must be at most 86400"),
            "{err}"
        );
        assert_eq!(
            policy(&format!("{POLICY}linger_s = 30\n"))
                .unwrap()
                .linger_ms("cad"),
            30_000
        );
        for timeout in [0, 59, 30 * 86_400 + 1] {
            let err = policy(&format!("{POLICY}idle_timeout_s = {timeout}\n")).unwrap_err();
            assert!(
                err.contains(&format!(
                    "idle_timeout_s is {timeout}; it must be from 60 to 2592000 seconds"
                )),
                "{err}"
            );
        }
        let timed = policy(&format!("{POLICY}idle_timeout_s = 900\n")).unwrap();
        assert_eq!(timed.idle_timeout_ms("cad"), Some(900_000));
        assert_eq!(timed.idle_timeout_ms("cam"), None);
        assert_eq!(
            Policy::from_text(&timed.to_text(), "").unwrap(),
            timed,
            "kept when written back"
        );
        let err = policy(&POLICY.replace("exclude", "forbid")).unwrap_err();
        assert!(err.contains("unknown field `forbid`"), "{err}");
    }

    /// Seats `held` by (user, seats), and whether `new` may take `seats` more.
    fn claim(
        p: &Policy,
        total: u32,
        held: &[(&str, u32)],
        new: (&str, u32),
    ) -> Result<(), ClaimRefused> {
        let held: Vec<(Asker, u32)> = held.iter().map(|&(u, n)| (asker(u, "pc", ""), n)).collect();
        p.check_claim(
            "cad",
            total,
            held.iter().copied(),
            (asker(new.0, "pc", ""), new.1),
        )
    }

    #[test]
    fn reserves_keep_their_seats_from_others_and_maxima_bound_those_they_name() {
        let text = "\
[policy.groups]
design = [\"alice\", \"bob\"]
ops = [\"olga\"]
[policy.features.cad]
reserve = [\"2 group:design\", \"1 group:ops\"]
max = [\"1 user:bob\", \"3 group:design\"]
";
        let p = policy(text).unwrap();
        assert!(p.counts("cad") && !p.counts("cam"));
        assert_eq!(p.reserved_seats("cad"), 3);
        // 5 seats: 2 for design, 1 for ops, 2 for everyone.
        assert_eq!(claim(&p, 5, &[("carol", 1)], ("dave", 1)), Ok(()));
        let third = claim(&p, 5, &[("carol", 1), ("dave", 1)], ("erin", 1)).unwrap_err();
        let ClaimRefused::Reserved(reason) = third else {
            panic!("{third:?}")
        };
        assert!(
            reason.contains("kept by the pool's policy, 2 for \"group:design\" (reserve \"2 group:design\", line 5 of the pool file) and 1 for \"group:ops\""),
            "{reason}"
        );
        // The reserve's own members still get theirs, then the general seats.
        assert_eq!(
            claim(&p, 5, &[("carol", 1), ("dave", 1)], ("alice", 1)),
            Ok(())
        );
        assert_eq!(
            claim(&p, 5, &[("carol", 1), ("dave", 1)], ("olga", 1)),
            Ok(())
        );
        assert_eq!(claim(&p, 5, &[("carol", 1)], ("alice", 2)), Ok(()));
        // Design beyond its reserve takes a general seat, then no more.
        assert_eq!(claim(&p, 5, &[("alice", 2)], ("alice", 1)), Ok(()));
        assert!(matches!(
            claim(&p, 5, &[("alice", 2), ("carol", 2)], ("alice", 1)),
            Err(ClaimRefused::Max(_)) | Err(ClaimRefused::Reserved(_))
        ));
        // Maxima: bob alone, design together.
        let bob = claim(&p, 10, &[("bob", 1)], ("bob", 1)).unwrap_err();
        let ClaimRefused::Max(reason) = bob else {
            panic!("{bob:?}")
        };
        assert!(
            reason.contains("user `bob` on host `pc`")
                && reason.contains("(max \"1 user:bob\", line 6 of the pool file)"),
            "{reason}"
        );
        assert_eq!(claim(&p, 10, &[("bob", 1)], ("alice", 2)), Ok(()));
        assert!(matches!(
            claim(&p, 10, &[("bob", 1), ("alice", 2)], ("alice", 1)),
            Err(ClaimRefused::Max(_))
        ));
        assert_eq!(
            claim(&p, 10, &[("bob", 1), ("alice", 2)], ("carol", 5)),
            Ok(())
        );
        // Written back as read.
        assert_eq!(Policy::from_text(&p.to_text(), "").unwrap(), p);
        for (rule, expected) in [
            ("\"0 group:design\"", "`0` is not a number of seats above 0"),
            ("\"group:design\"", "a reserve or max rule is `N RULE`"),
            ("\"2 group:nope\"", "no group `nope`"),
        ] {
            let err = policy(&text.replace("\"2 group:design\"", rule)).unwrap_err();
            assert!(
                err.contains(&format!("line 5: reserve rule {rule}: {expected}")),
                "{err}"
            );
        }
    }

    #[test]
    fn ranges_match_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.1.2.3"), ip("10.1.0.0"), 16));
        assert!(!in_range(ip("10.2.2.3"), ip("10.1.0.0"), 16));
        assert!(in_range(ip("10.2.2.3"), ip("0.0.0.0"), 0));
        assert!(in_range(ip("fd00::1"), ip("fd00::"), 8));
        assert!(!in_range(ip("fd00::1"), ip("10.0.0.0"), 8));
        assert!(in_range(ip("127.0.0.1"), ip("127.0.0.1"), 32));
    }
}
