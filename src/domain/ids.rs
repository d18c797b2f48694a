//! Identifiers and names that cross the API: E.164 numbers, tenant ids, carrier ids, SIP
//! domains and URIs, opaque ids. Each `parse` returns a description of the problem on failure.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A telephone number in E.164 form: `+`, then 1 to 15 digits, the first not zero.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct E164(String);

impl E164 {
    /// Parses an E.164 number; no spaces, dashes or other formatting are accepted.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some(digits) = raw.strip_prefix('+') else {
            return Err("must be an E.164 number: '+' followed by 1 to 15 digits".into());
        };
        if digits.is_empty()
            || digits.len() > 15
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(
                "must be an E.164 number: '+' followed by 1 to 15 digits, the first not 0".into(),
            );
        }
        Ok(Self(raw.to_owned()))
    }

    /// The number as text, with its `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Microsoft Entra tenant id: a GUID, stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a GUID in the 8-4-4-4-12 hexadecimal form (any case).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required: the customer's tenant id (a GUID)".into());
        }
        let groups: Vec<&str> = raw.split('-').collect();
        let lengths = [8, 4, 4, 4, 12];
        let ok = groups.len() == lengths.len()
            && groups
                .iter()
                .zip(lengths)
                .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err("must be a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47".into());
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    /// The GUID in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A carrier id (also the last segment of its SPIFFE identity): 2 to 63 characters of
/// lower-case letters, digits and `-`, starting with a letter and not ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CarrierId(String);

impl CarrierId {
    /// Parses a carrier id.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if is_dns_label(raw) && raw.len() >= 2 && raw.starts_with(|c: char| c.is_ascii_lowercase())
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 2 to 63 characters of a-z, 0-9 and '-', starting with a letter".into())
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by carrier id can be searched with a `&str` (hash and order are the string's).
impl std::borrow::Borrow<str> for CarrierId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CarrierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a lower-case DNS label: 1 to 63 of `a-z0-9-`, not starting or ending with `-`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A carrier's SIP domain: a fully qualified host name of at least two labels, lower case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SipDomain(String);

impl SipDomain {
    /// Parses a host name; upper-case letters are folded to lower case.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let lower = raw.to_ascii_lowercase();
        let labels: Vec<&str> = lower.split('.').collect();
        if lower.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| is_dns_label(l)) {
            return Err("must be a fully qualified host name such as sip.contoso.example".into());
        }
        Ok(Self(lower))
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `host` is this domain or a subdomain of it.
    fn contains(&self, host: &str) -> bool {
        host == self.0
            || host
                .strip_suffix(self.0.as_str())
                .is_some_and(|prefix| prefix.ends_with('.'))
    }
}

/// The SIP URI calls for a number are routed to: `sip:<number>@<host>;user=phone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SipUri(String);

impl SipUri {
    /// The default URI of `number` in `domain`.
    pub fn default_for(number: &E164, domain: &SipDomain) -> Self {
        Self(format!(
            "sip:{number}@{domain};user=phone",
            domain = domain.0
        ))
    }

    /// Parses a URI given for `number`: the user part must be the number itself and the host
    /// must lie in the carrier's SIP domain (an optional `:port` is allowed).
    pub fn parse_for(raw: &str, number: &E164, domain: &SipDomain) -> Result<Self, String> {
        let shape = "must be sip:<number>@<host>;user=phone";
        let rest = raw
            .strip_prefix("sip:")
            .ok_or_else(|| format!("{shape} (scheme sip:)"))?;
        let (user, host_and_params) = rest
            .split_once('@')
            .ok_or_else(|| format!("{shape} (no '@')"))?;
        if user != number.as_str() {
            return Err(format!("user part must be the number itself ({number})"));
        }
        let (host_port, params) = host_and_params
            .split_once(';')
            .ok_or_else(|| format!("{shape} (missing ;user=phone)"))?;
        if params != "user=phone" {
            return Err(format!("{shape}: the only parameter allowed is user=phone"));
        }
        let host = match host_port.rsplit_once(':') {
            Some((host, port)) => {
                if port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err("port must be between 1 and 65535".into());
                }
                host
            }
            None => host_port,
        };
        let host = SipDomain::parse(host).map_err(|_| format!("{shape}: host is not valid"))?;
        if !domain.contains(host.as_str()) {
            return Err(format!(
                "host must be in the carrier's SIP domain {}",
                domain.as_str()
            ));
        }
        let port = host_port.rsplit_once(':').map(|(_, p)| p);
        Ok(Self(match port {
            Some(p) => format!("sip:{number}@{}:{p};user=phone", host.as_str()),
            None => format!("sip:{number}@{};user=phone", host.as_str()),
        }))
    }

    /// The URI as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque id from the platform (assignment target, calling profile, location): 1 to 128
/// printable ASCII characters without spaces.
pub fn parse_opaque_id(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 128 printable ASCII characters without spaces".into());
    }
    Ok(raw.to_owned())
}

/// Like [`parse_opaque_id`], but empty is allowed (the field is optional).
pub fn parse_optional_opaque_id(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        Ok(String::new())
    } else {
        parse_opaque_id(raw)
    }
}

/// An ISO 3166-1 alpha-2 country code (two upper-case letters) or empty.
pub fn parse_country_code(raw: &str) -> Result<String, String> {
    if raw.is_empty() || (raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_uppercase())) {
        Ok(raw.to_owned())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code such as US, or empty".into())
    }
}

/// A display name: 1 to 200 characters, no control characters.
pub fn parse_display_name(raw: &str) -> Result<String, String> {
    let len = raw.chars().count();
    if len == 0 || len > 200 || raw.chars().any(char::is_control) {
        return Err("must be 1 to 200 characters without control characters".into());
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_accepts_plus_and_up_to_15_digits() {
        assert!(E164::parse("+14255550100").is_ok());
        assert!(E164::parse("+1").is_ok());
        assert!(E164::parse("+123456789012345").is_ok());
    }

    #[test]
    fn e164_rejects_formatting_leading_zero_and_length() {
        for bad in [
            "",
            "14255550100",
            "+",
            "+0123",
            "+1234567890123456",
            "+1 425 555",
            "+1-425",
            "+١٢٣",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tenant_id_is_a_guid_folded_to_lower_case() {
        let t = TenantId::parse("72F988BF-86F1-41AF-91AB-2D7CD011DB47").unwrap();
        assert_eq!(t.as_str(), "72f988bf-86f1-41af-91ab-2d7cd011db47");
        for bad in [
            "",
            "tenant",
            "72f988bf86f141af91ab2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db4g",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn carrier_id_rules() {
        assert!(CarrierId::parse("contoso").is_ok());
        assert!(CarrierId::parse("tel-2").is_ok());
        for bad in ["", "a", "Contoso", "2tel", "tel-", "a_b", &"a".repeat(64)] {
            assert!(CarrierId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sip_uri_must_carry_the_number_and_a_host_in_the_domain() {
        let n = E164::parse("+14255550100").unwrap();
        let d = SipDomain::parse("sip.contoso.example").unwrap();
        assert_eq!(
            SipUri::default_for(&n, &d).as_str(),
            "sip:+14255550100@sip.contoso.example;user=phone"
        );
        assert!(
            SipUri::parse_for("sip:+14255550100@sip.contoso.example;user=phone", &n, &d).is_ok()
        );
        assert!(
            SipUri::parse_for(
                "sip:+14255550100@eu.sip.contoso.example:5061;user=phone",
                &n,
                &d
            )
            .is_ok()
        );
        for bad in [
            "sip:+14255550101@sip.contoso.example;user=phone",
            "sips:+14255550100@sip.contoso.example;user=phone",
            "sip:+14255550100@sip.fabrikam.example;user=phone",
            "sip:+14255550100@evilsip.contoso.example.attacker;user=phone",
            "sip:+14255550100@xsip.contoso.example;user=phone",
            "sip:+14255550100@sip.contoso.example",
            "sip:+14255550100@sip.contoso.example:0;user=phone",
            "sip:+14255550100@sip.contoso.example;user=phone;x=y",
        ] {
            assert!(SipUri::parse_for(bad, &n, &d).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn opaque_ids_and_country_codes() {
        assert!(parse_opaque_id("user-1@contoso").is_ok());
        assert!(parse_opaque_id("").is_err());
        assert!(parse_opaque_id("a b").is_err());
        assert!(parse_optional_opaque_id("").is_ok());
        assert!(parse_country_code("US").is_ok());
        assert!(parse_country_code("").is_ok());
        assert!(parse_country_code("us").is_err());
        assert!(parse_country_code("USA").is_err());
    }
}
