//! Conditional access: what an organization requires of every admin request
//! (MFA, trusted networks, office hours) and the facts of one request.
use crate::error::{quote, Error, ErrorKind};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// What an organization requires of every admin sign-in and request.
///
/// The default requires nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConditions {
    /// Refuse sessions whose second factor was not verified.
    #[serde(default)]
    pub require_mfa: bool,
    /// When not empty, refuse requests from addresses outside these networks.
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
    /// When set, refuse requests outside these hours.
    #[serde(default)]
    pub office_hours: Option<OfficeHours>,
}

/// The facts of one request that conditional access looks at, as the
/// server established them for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessContext {
    /// Whether the session's second factor was verified.
    pub mfa_verified: bool,
    /// The client's address (an IPv4-mapped IPv6 address counts as IPv4).
    pub source_ip: IpAddr,
    /// The server's clock, in milliseconds since the Unix epoch.
    pub now_unix_ms: i64,
}

/// The conditional-access facts handed to Cedar as the request context:
/// each requirement with whether this request meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Facts {
    pub(crate) mfa_required: bool,
    pub(crate) mfa_verified: bool,
    pub(crate) network_restricted: bool,
    pub(crate) trusted_network: bool,
    pub(crate) hours_restricted: bool,
    pub(crate) office_hours: bool,
}

impl Facts {
    pub(crate) fn new(conditions: &OrgConditions, context: &AccessContext) -> Self {
        Facts {
            mfa_required: conditions.require_mfa,
            mfa_verified: context.mfa_verified,
            network_restricted: !conditions.trusted_networks.is_empty(),
            trusted_network: conditions
                .trusted_networks
                .iter()
                .any(|n| n.contains(context.source_ip)),
            hours_restricted: conditions.office_hours.is_some(),
            office_hours: conditions
                .office_hours
                .as_ref()
                .is_none_or(|h| h.contains(context.now_unix_ms)),
        }
    }
}

/// An IPv4 or IPv6 network: an address and a prefix length, written in CIDR
/// notation (`10.0.0.0/8`, `2001:db8::/32`). A bare address is a network
/// of one (`/32` or `/128`). Bits after the prefix must be zero, so
/// `10.0.0.1/8` is refused rather than silently read as `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `prefix` leading bits of `addr`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::new(
                ErrorKind::InvalidPrefix,
                format!("prefix /{prefix} is longer than an {}-bit address", max),
            ));
        }
        let net = IpNet { addr, prefix };
        if net.masked(addr) != addr {
            let fixed = IpNet {
                addr: net.masked(addr),
                prefix,
            };
            return Err(Error::new(
                ErrorKind::HostBitsSet,
                format!("{addr}/{prefix} has bits set after the prefix; did you mean {fixed}?"),
            ));
        }
        Ok(net)
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`, what a dual-stack socket reports for an IPv4
    /// client) is compared as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidNetwork,
                format!(
                    "invalid network {}: write an IPv4 or IPv6 address with an optional /prefix, such as 10.0.0.0/8 or 2001:db8::/32",
                    quote(s)
                ),
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix = match prefix {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                // At most three digits, so it fits in a u16.
                let p: u16 = p.parse().map_err(|_| invalid())?;
                u8::try_from(p).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidPrefix,
                        format!("prefix /{p} is longer than any address"),
                    )
                })?
            }
            Some(_) => return Err(invalid()),
        };
        IpNet::new(addr, prefix)
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The three-letter lower-case name (`mon`).
    pub fn as_str(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self as usize]
    }

    /// The day that `days` days after the Unix epoch (a Thursday) falls on.
    fn from_epoch_day(days: i64) -> Weekday {
        // 1970-01-01 was a Thursday (index 3 from Monday).
        Weekday::ALL[(days + 3).rem_euclid(7) as usize]
    }

    fn previous(self) -> Weekday {
        Weekday::ALL[(self as usize + 6) % 7]
    }
}

impl FromStr for Weekday {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Weekday::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidDays,
                    format!(
                        "unknown day {}: use mon, tue, wed, thu, fri, sat or sun",
                        quote(s)
                    ),
                )
            })
    }
}

/// A set of weekdays, written as days and ranges separated by commas:
/// `mon-fri`, `mon,wed,fri`, `fri-mon` (a range may wrap past Sunday).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Weekdays(u8);

impl Weekdays {
    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day as u8) != 0
    }

    /// Add `day` to the set.
    pub fn insert(&mut self, day: Weekday) {
        self.0 |= 1 << day as u8;
    }

    /// Whether the set holds no day.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Weekday> for Weekdays {
    fn from_iter<I: IntoIterator<Item = Weekday>>(iter: I) -> Self {
        let mut set = Weekdays::default();
        for d in iter {
            set.insert(d);
        }
        set
    }
}

impl fmt::Debug for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Weekdays({self})")
    }
}

impl fmt::Display for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of three or more days are written as ranges.
        let mut first = true;
        let mut i = 0;
        while i < 7 {
            if !self.contains(Weekday::ALL[i]) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j + 1 < 7 && self.contains(Weekday::ALL[j + 1]) {
                j += 1;
            }
            let sep = if first { "" } else { "," };
            first = false;
            if j - i >= 2 {
                write!(
                    f,
                    "{sep}{}-{}",
                    Weekday::ALL[i].as_str(),
                    Weekday::ALL[j].as_str()
                )?;
            } else {
                for (k, d) in Weekday::ALL[i..=j].iter().enumerate() {
                    let sep = if k == 0 { sep } else { "," };
                    write!(f, "{sep}{}", d.as_str())?;
                }
            }
            i = j + 1;
        }
        Ok(())
    }
}

impl FromStr for Weekdays {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut set = Weekdays::default();
        for item in s.split(',') {
            match item.split_once('-') {
                Some((from, to)) => {
                    let (from, to): (Weekday, Weekday) = (from.parse()?, to.parse()?);
                    let mut d = from;
                    loop {
                        set.insert(d);
                        if d == to {
                            break;
                        }
                        d = Weekday::ALL[(d as usize + 1) % 7];
                    }
                }
                None => set.insert(item.parse()?),
            }
        }
        Ok(set)
    }
}

/// When admins may work: on some weekdays, between two times of day, in a
/// fixed offset from UTC. Written `DAYS HH:MM-HH:MM [±HH:MM]`, for example
/// `mon-fri 08:00-18:00 +01:00`; without an offset the times are UTC.
///
/// The start is inclusive and the end exclusive; `24:00` is allowed as an
/// end, so `00:00-24:00` is the whole day. A window whose end is earlier
/// than its start **crosses midnight** and belongs to the day it starts on:
/// `fri 22:00-06:00` allows Friday 22:00 to Saturday 06:00, not Friday
/// 00:00-06:00. A window that starts when it ends is refused
/// ([`ErrorKind::EmptyWindow`]): it would be either empty or the whole day.
///
/// The offset is fixed: it does not follow daylight saving time (that needs
/// a time-zone database, which this pure crate does not carry). An
/// organization on DST changes its offset twice a year, or widens its
/// window by an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OfficeHours {
    days: Weekdays,
    start_minute: u16,
    end_minute: u16,
    utc_offset_minutes: i16,
}

const MAX_OFFSET_MINUTES: i16 = 14 * 60;

impl OfficeHours {
    /// Office hours on `days` from `start_minute` to `end_minute` (minutes
    /// after local midnight, 0-1439 and 1-1440) at `utc_offset_minutes` from
    /// UTC (±840).
    pub fn new(
        days: Weekdays,
        start_minute: u16,
        end_minute: u16,
        utc_offset_minutes: i16,
    ) -> Result<OfficeHours, Error> {
        if days.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidDays,
                "office hours need at least one day",
            ));
        }
        if start_minute >= 1440 || end_minute > 1440 {
            return Err(Error::new(
                ErrorKind::InvalidTime,
                "office hours start before 24:00 and end at 24:00 at the latest",
            ));
        }
        if start_minute == end_minute {
            return Err(empty_window());
        }
        if !(-MAX_OFFSET_MINUTES..=MAX_OFFSET_MINUTES).contains(&utc_offset_minutes) {
            return Err(Error::new(
                ErrorKind::InvalidUtcOffset,
                format!("UTC offset {utc_offset_minutes} minutes is beyond ±14:00"),
            ));
        }
        Ok(OfficeHours {
            days,
            start_minute,
            end_minute,
            utc_offset_minutes,
        })
    }

    /// The days the window starts on.
    pub fn days(&self) -> Weekdays {
        self.days
    }

    /// Start, in minutes after local midnight (inclusive).
    pub fn start_minute(&self) -> u16 {
        self.start_minute
    }

    /// End, in minutes after local midnight (exclusive); smaller than the
    /// start when the window crosses midnight.
    pub fn end_minute(&self) -> u16 {
        self.end_minute
    }

    /// The local time's offset from UTC, in minutes (east is positive).
    pub fn utc_offset_minutes(&self) -> i16 {
        self.utc_offset_minutes
    }

    /// Whether the instant `now_unix_ms` falls inside the office hours.
    pub fn contains(&self, now_unix_ms: i64) -> bool {
        let local = now_unix_ms.div_euclid(60_000) + i64::from(self.utc_offset_minutes);
        let day = Weekday::from_epoch_day(local.div_euclid(1440));
        let minute = local.rem_euclid(1440);
        let (start, end) = (i64::from(self.start_minute), i64::from(self.end_minute));
        if start < end {
            self.days.contains(day) && start <= minute && minute < end
        } else {
            // Crosses midnight: the evening part belongs to today, the
            // morning part to the day before.
            (self.days.contains(day) && minute >= start)
                || (self.days.contains(day.previous()) && minute < end)
        }
    }
}

fn empty_window() -> Error {
    Error::new(
        ErrorKind::EmptyWindow,
        "office hours start when they end; write 00:00-24:00 for the whole day",
    )
}

fn parse_hhmm(s: &str, what: &str) -> Result<u16, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidTime,
            format!(
                "invalid {what} time {}: write HH:MM from 00:00 to 24:00",
                quote(s)
            ),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let two_digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_offset(s: &str) -> Result<i16, Error> {
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Ok(0);
    }
    let bad = || {
        Error::new(
            ErrorKind::InvalidUtcOffset,
            format!(
                "invalid UTC offset {}: write +HH:MM or -HH:MM within ±14:00, or UTC",
                quote(s)
            ),
        )
    };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let two_digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let (h, m): (i16, i16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let total = h * 60 + m;
    if m >= 60 || total > MAX_OFFSET_MINUTES {
        return Err(bad());
    }
    Ok(sign * total)
}

impl FromStr for OfficeHours {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let (days, window, offset) = match parts[..] {
            [days, window] => (days, window, None),
            [days, window, offset] => (days, window, Some(offset)),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOfficeHours,
                    format!(
                        "invalid office hours {}: write DAYS HH:MM-HH:MM [±HH:MM], such as mon-fri 08:00-18:00 +01:00",
                        quote(s)
                    ),
                ))
            }
        };
        let days: Weekdays = days.parse()?;
        let (start, end) = window.split_once('-').ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidTime,
                format!("invalid time window {}: write HH:MM-HH:MM", quote(window)),
            )
        })?;
        let start = parse_hhmm(start, "start")?;
        let end = parse_hhmm(end, "end")?;
        if start == 1440 {
            return Err(Error::new(
                ErrorKind::InvalidTime,
                "office hours cannot start at 24:00; write 00:00",
            ));
        }
        let offset = offset.map(parse_offset).transpose()?.unwrap_or(0);
        OfficeHours::new(days, start, end, offset)
    }
}

impl fmt::Display for OfficeHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off = self.utc_offset_minutes;
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02} {}{:02}:{:02}",
            self.days,
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60,
            if off < 0 { '-' } else { '+' },
            off.unsigned_abs() / 60,
            off.unsigned_abs() % 60,
        )
    }
}

impl serde::Serialize for OfficeHours {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OfficeHours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
