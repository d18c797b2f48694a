//! Certificate issuance for opconnect's mutual TLS: a CA, server certificates and client
//! certificates that carry a SPIFFE identity.
//!
//! `opconnect certs` writes what this module issues to disk; tests issue in memory. Callers are
//! identified by a URI SAN, `spiffe://<trust-domain>/carrier/<id>` or
//! `spiffe://<trust-domain>/platform/<name>`; the common name is informational only.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::X509Name;

mod crl;
mod files;

pub use crl::revoke;
use files::{issued_paths, refuse_unsafe_target, write_file, write_issued};

/// Trust domain used in SPIFFE URIs when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "opconnect";

/// Common name of the development CA; the server warns when its client CA has this CN.
pub const DEV_CA_COMMON_NAME: &str = "opconnect development CA (not for production)";

/// Common name of a CA made by `certs init` without `--dev`.
const CA_COMMON_NAME: &str = "opconnect CA";

/// Common name of server certificates; clients check the SANs, never this.
const SERVER_COMMON_NAME: &str = "opconnect server";

/// Names a server certificate covers when `certs init` is given none: a local development server.
const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const DAY: Duration = Duration::from_hours(24);

/// Lifetime of a CA certificate.
const CA_VALIDITY: Duration = DAY.saturating_mul(3650);

/// Lifetime of server and client certificates: the CA/Browser Forum's historical 825-day limit,
/// which some TLS stacks still enforce on leaf certificates.
const LEAF_VALIDITY: Duration = DAY.saturating_mul(825);

/// Certificates are valid from slightly in the past so that a peer whose clock lags behind the
/// issuing host does not reject a freshly issued certificate.
const CLOCK_SKEW: Duration = Duration::from_mins(5);

/// File stem of the CA certificate and key in a certificate directory.
const CA_FILE_STEM: &str = "ca";

/// File stem of the server certificate and key in a certificate directory.
const SERVER_FILE_STEM: &str = "server";

/// Mode of private key files: readable by their owner only.
const PRIVATE_KEY_MODE: u32 = 0o600;

/// Mode of certificates and CRLs: public, but written by their owner only.
const PUBLIC_FILE_MODE: u32 = 0o644;

/// File name of the certificate revocation list in a certificate directory.
pub const CRL_FILE_NAME: &str = "crl.pem";

/// The nextUpdate a CRL states. opconnect does not enforce it (an old CRL keeps working until
/// it is replaced); it is there because RFC 5280 requires it and other verifiers read it.
const CRL_VALIDITY: Duration = DAY.saturating_mul(365);

/// An error while issuing, loading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The certificate directory could not be created.
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `init` would replace an existing CA key, which invalidates every certificate it signed.
    #[error("{0} already exists; refusing to replace the CA (pass --force to overwrite it)")]
    AlreadyExists(PathBuf),
    /// A carrier id or platform name is not usable in a SPIFFE path.
    #[error("invalid identity name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A trust domain is not a valid SPIFFE trust domain name.
    #[error("invalid trust domain {name:?}: {reason}")]
    InvalidTrustDomain { name: String, reason: &'static str },
    /// A server certificate was requested without any name to cover.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    /// A CA certificate or key could not be used to sign certificates.
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    /// The CA in a certificate directory could not be loaded.
    #[error("cannot load the CA from {dir}")]
    LoadCa {
        dir: PathBuf,
        #[source]
        source: Box<PkiError>,
    },
    /// A file to be written is a symbolic link (possibly planted to redirect a private key).
    #[error("{0} is a symbolic link; refusing to write through it")]
    Symlink(PathBuf),
    /// A path to be written exists and is not a regular file.
    #[error("{0} exists and is not a regular file; refusing to replace it")]
    NotAFile(PathBuf),
    /// A certificate or CRL file cannot be parsed.
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A certificate or CRL in the directory was not issued by its CA.
    #[error("{0} was not issued by the CA in this directory")]
    ForeignIssuer(PathBuf),
    /// rcgen could not generate a key or certificate (for example a non-ASCII name).
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
}

/// Who a client certificate identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A carrier, by its carrier id.
    Carrier(String),
    /// The Operator Connect platform side, by a name for the component (e.g. `ops`).
    Platform(String),
}

// === impl Subject ===

impl Subject {
    /// The carrier id or platform name.
    pub fn name(&self) -> &str {
        match self {
            Subject::Carrier(name) | Subject::Platform(name) => name,
        }
    }

    /// The SPIFFE ID, e.g. `spiffe://opconnect/carrier/contoso`.
    pub fn spiffe_uri(&self, trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/{}/{}", self.kind(), self.name())
    }

    /// The file name without extension, e.g. `carrier-contoso`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.kind(), self.name())
    }

    /// The SPIFFE path segment naming the kind of caller.
    fn kind(&self) -> &'static str {
        match self {
            Subject::Carrier(_) => "carrier",
            Subject::Platform(_) => "platform",
        }
    }
}

/// A revoked certificate in a CRL: its serial number (the DER INTEGER's content bytes) and
/// when it was revoked.
pub type RevokedSerial = (Vec<u8>, OffsetDateTime);

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM encoded.
    pub cert_pem: String,
    /// The certificate's PKCS#8 private key, PEM encoded.
    pub key_pem: String,
}

/// A certificate authority that can sign server and client certificates.
#[derive(Debug)]
pub struct CertificateAuthority {
    /// The CA certificate, handed out as the trust anchor.
    cert_pem: String,
    /// Subject, key identifier and signing key written into and used for every issued
    /// certificate; the subject must match the CA certificate byte for byte for chains to build.
    issuer: Issuer<'static, KeyPair>,
    /// When the CA certificate expires: issued certificates never outlive it.
    not_after: SystemTime,
    /// How the CA's key identifier is made: a CRL names its CA by the same identifier.
    key_identifier_method: KeyIdMethod,
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// Generates a self-signed CA with an ECDSA P-256 key, valid for 10 years, that may sign
    /// end-entity certificates only.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let not_after = SystemTime::now() + CA_VALIDITY;
        set_validity(&mut params, not_after);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_identifier_method: params.key_identifier_method.clone(),
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) private key, checking that the
    /// certificate is a CA and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::InvalidCa(format!("cannot parse the private key: {e}")))?;
        let (_, pem) = parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| PkiError::InvalidCa(format!("cannot parse the certificate PEM: {e}")))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| PkiError::InvalidCa(format!("cannot parse the certificate: {e}")))?;

        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(PkiError::InvalidCa(
                "the certificate is not a CA certificate (basicConstraints cA is not set)".into(),
            ));
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::InvalidCa(
                "the private key does not belong to the certificate".into(),
            ));
        }

        let not_after = u64::try_from(cert.validity().not_after.timestamp())
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .map_err(|_| PkiError::InvalidCa("the certificate expired before 1970".into()))?;
        if not_after <= SystemTime::now() {
            return Err(PkiError::InvalidCa("the certificate has expired".into()));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cert.subject())?;
        params.key_identifier_method = subject_key_identifier(&cert);
        params.key_usages = ca_key_usages(&cert)?;
        check_subject_round_trip(&params, &key, cert.subject())?;

        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_identifier_method: params.key_identifier_method.clone(),
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key, PKCS#8 PEM encoded.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Server certificate: SANs are DNS names or IP addresses (each string is parsed as an
    /// `IpAddr` first), serverAuth EKU, valid for 825 days.
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, PkiError> {
        if names.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        let mut params = self.leaf_params(SERVER_COMMON_NAME);
        params.subject_alt_names = names
            .iter()
            .map(|name| server_name_san(name))
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&params)
    }

    /// Client certificate for an identity: URI SAN = `subject.spiffe_uri(trust_domain)`,
    /// CN = the id or name, clientAuth EKU, valid for 825 days. The name and trust domain are
    /// validated first, so a certificate with an unusable identity is never issued.
    pub fn issue_client(&self, subject: &Subject, trust_domain: &str) -> Result<Issued, PkiError> {
        validate_identity_name(subject.name())?;
        validate_trust_domain(trust_domain)?;
        self.issue_client_with_uris(subject.name(), &[subject.spiffe_uri(trust_domain)])
    }

    /// Client certificate with arbitrary URI SANs (possibly none) and a CN, unvalidated — for
    /// tests of certificates without a SPIFFE identity or with a foreign trust domain.
    pub fn issue_client_with_uris(
        &self,
        common_name: &str,
        uris: &[String],
    ) -> Result<Issued, PkiError> {
        let mut params = self.leaf_params(common_name);
        params.subject_alt_names = uris
            .iter()
            .map(|uri| Ok(SanType::URI(Ia5String::try_from(uri.as_str())?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&params)
    }

    /// A CRL signed by this CA, PEM encoded, listing `revoked` (serial and revocation time),
    /// with CRL number `number` (big-endian, unsigned), valid from now.
    pub fn revocation_list(
        &self,
        revoked: &[RevokedSerial],
        number: &[u8],
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.key_identifier_method.clone(),
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// The CA certificate, DER encoded.
    fn cert_der(&self) -> Result<Vec<u8>, PkiError> {
        let (_, pem) = parse_x509_pem(self.cert_pem.as_bytes())
            .map_err(|e| PkiError::InvalidCa(format!("cannot parse the certificate PEM: {e}")))?;
        Ok(pem.contents)
    }

    /// Parameters shared by server and client certificates.
    fn leaf_params(&self, common_name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(
            &mut params,
            (SystemTime::now() + LEAF_VALIDITY).min(self.not_after),
        );
        params
    }

    /// Signs `params` for a fresh key pair.
    fn sign(&self, params: &CertificateParams) -> Result<Issued, PkiError> {
        let key = new_key()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new ECDSA P-256 key pair.
fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// A distinguished name holding only a common name.
fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Makes `params` valid from now, less the clock-skew allowance, until `not_after`.
fn set_validity(params: &mut CertificateParams, not_after: SystemTime) {
    params.not_before = (SystemTime::now() - CLOCK_SKEW).into();
    params.not_after = not_after.into();
}

/// An IP address SAN when `name` parses as one, else a DNS name SAN.
fn server_name_san(name: &str) -> Result<SanType, rcgen::Error> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(Ia5String::try_from(name)?),
    })
}

/// Rebuilds a parsed distinguished name for rcgen, keeping each attribute's string type so the
/// encoding matches the original.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
    let unsupported = || PkiError::InvalidCa("unsupported subject name encoding".into());
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err(unsupported());
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or_else(unsupported)?
            .collect();
        let text = attribute.as_str().map_err(|_| unsupported())?;
        let value = match attribute.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(PrintableString::try_from(text)?),
            Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text)?),
            _ => return Err(unsupported()),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The CA's subject key identifier, which issued certificates name as their authority key
/// identifier; derived from the key when the CA certificate has none.
fn subject_key_identifier(cert: &X509Certificate<'_>) -> KeyIdMethod {
    cert.iter_extensions()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
            }
            _ => None,
        })
        .unwrap_or(KeyIdMethod::Sha256)
}

/// The CA's key usages, requiring keyCertSign when the extension is present.
fn ca_key_usages(cert: &X509Certificate<'_>) -> Result<Vec<KeyUsagePurpose>, PkiError> {
    let usage = cert
        .key_usage()
        .map_err(|e| PkiError::InvalidCa(format!("cannot parse the key usage: {e}")))?;
    let Some(usage) = usage else {
        return Ok(Vec::new());
    };
    if !usage.value.key_cert_sign() {
        return Err(PkiError::InvalidCa(
            "the certificate's key usage does not allow signing certificates".into(),
        ));
    }
    let flags = [
        (
            usage.value.digital_signature(),
            KeyUsagePurpose::DigitalSignature,
        ),
        (usage.value.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
        (usage.value.crl_sign(), KeyUsagePurpose::CrlSign),
    ];
    Ok(flags
        .into_iter()
        .filter_map(|(present, purpose)| present.then_some(purpose))
        .collect())
}

/// Checks that the rebuilt subject encodes exactly like the CA certificate's: TLS peers match an
/// issued certificate's issuer to its CA by comparing these bytes.
fn check_subject_round_trip(
    params: &CertificateParams,
    key: &KeyPair,
    subject: &X509Name<'_>,
) -> Result<(), PkiError> {
    let mut probe = CertificateParams::default();
    probe.distinguished_name = params.distinguished_name.clone();
    let probe = probe.self_signed(key)?;
    let reencoded = x509_parser::parse_x509_certificate(probe.der())
        .map_err(|e| PkiError::InvalidCa(format!("cannot re-encode the subject: {e}")))?
        .1;
    if reencoded.subject().as_raw() != subject.as_raw() {
        return Err(PkiError::InvalidCa(
            "the subject name cannot be reproduced exactly".into(),
        ));
    }
    Ok(())
}

/// Validate an id used in a SPIFFE path: carrier ids and platform names are 2–63 characters of
/// `[a-z0-9-]`, starting with a letter and not ending with `-`.
pub fn validate_identity_name(name: &str) -> Result<(), PkiError> {
    let invalid = |reason| {
        Err(PkiError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if !(2..=63).contains(&name.len()) {
        return invalid("must be 2 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("may contain only lowercase letters, digits and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("must start with a letter");
    }
    if name.ends_with('-') {
        return invalid("must not end with '-'");
    }
    Ok(())
}

/// Validate a SPIFFE trust domain name: 1–255 characters of `[a-z0-9._-]`.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), PkiError> {
    let invalid = |reason| {
        Err(PkiError::InvalidTrustDomain {
            name: trust_domain.to_owned(),
            reason,
        })
    };
    if !(1..=255).contains(&trust_domain.len()) {
        return invalid("must be 1 to 255 characters long");
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return invalid("may contain only lowercase letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

/// `certs init`: generate a CA (CN = [`DEV_CA_COMMON_NAME`] when `dev`, else "opconnect CA"), a
/// server certificate for `server_names` (`localhost`, `127.0.0.1` and `::1` when empty) and a client
/// certificate per subject, and write them into `dir` (created if missing): `ca.pem`, `ca.key`,
/// `server.pem`, `server.key` and `<file_stem>.pem`/`.key` per subject. Keys are written with
/// mode 0600. Refuses to overwrite an existing `ca.key` unless `force`. Everything is validated
/// and issued before the first file is written. Returns the files written.
pub fn init(
    dir: &Path,
    trust_domain: &str,
    server_names: &[String],
    subjects: &[Subject],
    dev: bool,
    force: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    validate_trust_domain(trust_domain)?;
    for subject in subjects {
        validate_identity_name(subject.name())?;
    }
    let ca_key_path = dir.join(format!("{CA_FILE_STEM}.key"));
    let ca_key_exists = ca_key_path.try_exists().map_err(|source| PkiError::Read {
        path: ca_key_path.clone(),
        source,
    })?;
    if ca_key_exists && !force {
        return Err(PkiError::AlreadyExists(ca_key_path));
    }

    let ca = CertificateAuthority::generate(if dev {
        DEV_CA_COMMON_NAME
    } else {
        CA_COMMON_NAME
    })?;
    let server_names = if server_names.is_empty() {
        DEFAULT_SERVER_NAMES.map(String::from).to_vec()
    } else {
        server_names.to_vec()
    };
    let mut bundle = vec![
        (
            CA_FILE_STEM.to_owned(),
            Issued {
                cert_pem: ca.cert_pem(),
                key_pem: ca.key_pem(),
            },
        ),
        (SERVER_FILE_STEM.to_owned(), ca.issue_server(&server_names)?),
    ];
    for (i, subject) in subjects.iter().enumerate() {
        if subjects[..i].contains(subject) {
            continue;
        }
        bundle.push((subject.file_stem(), ca.issue_client(subject, trust_domain)?));
    }

    fs::create_dir_all(dir).map_err(|source| PkiError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    for (stem, _) in &bundle {
        let (cert_path, key_path) = issued_paths(dir, stem);
        refuse_unsafe_target(&cert_path)?;
        refuse_unsafe_target(&key_path)?;
    }
    let mut written = Vec::with_capacity(bundle.len() * 2);
    for (stem, issued) in &bundle {
        let (cert_path, key_path) = write_issued(dir, stem, issued)?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

/// `certs issue`: load `ca.pem`/`ca.key` from `dir`, issue one client certificate and write
/// `<file_stem>.pem`/`.key` (key mode 0600), replacing any previous pair. Returns the two paths.
pub fn issue(
    dir: &Path,
    trust_domain: &str,
    subject: &Subject,
) -> Result<(PathBuf, PathBuf), PkiError> {
    validate_identity_name(subject.name())?;
    validate_trust_domain(trust_domain)?;
    let ca = load_ca(dir).map_err(|source| PkiError::LoadCa {
        dir: dir.to_owned(),
        source: Box::new(source),
    })?;
    let issued = ca.issue_client(subject, trust_domain)?;
    write_issued(dir, &subject.file_stem(), &issued)
}

/// Reads the CA certificate and key written by [`init`].
fn load_ca(dir: &Path) -> Result<CertificateAuthority, PkiError> {
    let cert_pem = read(&dir.join(format!("{CA_FILE_STEM}.pem")))?;
    let key_pem = read(&dir.join(format!("{CA_FILE_STEM}.key")))?;
    CertificateAuthority::from_pem(&cert_pem, &key_pem)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;

    use super::crl::{increment, unsigned};
    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    /// The DER bytes inside a PEM certificate.
    fn der(cert_pem: &str) -> Result<Vec<u8>, Box<dyn Error>> {
        Ok(parse_x509_pem(cert_pem.as_bytes())?.1.contents)
    }

    /// The general names in a certificate's subject alternative name extension.
    fn sans<'a>(cert: &'a X509Certificate<'a>) -> Vec<GeneralName<'a>> {
        match cert.subject_alternative_name() {
            Ok(Some(san)) => san.value.general_names.clone(),
            _ => Vec::new(),
        }
    }

    /// The first common name in a certificate's subject.
    fn common_name<'a>(cert: &'a X509Certificate<'a>) -> Option<&'a str> {
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok()
    }

    fn roots(ca: &CertificateAuthority) -> Result<Arc<rustls::RootCertStore>, Box<dyn Error>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der(&ca.cert_pem())?))?;
        Ok(Arc::new(roots))
    }

    /// Verifies `cert_pem` as a client certificate the way the server's rustls config does.
    fn verify_client(ca: &CertificateAuthority, cert_pem: &str) -> TestResult {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider).build()?;
        verifier.verify_client_cert(&CertificateDer::from(der(cert_pem)?), &[], UnixTime::now())?;
        Ok(())
    }

    /// Verifies `cert_pem` as a server certificate for `name` the way a rustls client does.
    fn verify_server(ca: &CertificateAuthority, cert_pem: &str, name: &str) -> TestResult {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider).build()?;
        verifier.verify_server_cert(
            &CertificateDer::from(der(cert_pem)?),
            &[],
            &ServerName::try_from(name)?,
            &[],
            UnixTime::now(),
        )?;
        Ok(())
    }

    fn carrier(id: &str) -> Subject {
        Subject::Carrier(id.to_owned())
    }

    fn mode(path: &Path) -> Result<u32, Box<dyn Error>> {
        Ok(fs::metadata(path)?.permissions().mode() & 0o777)
    }

    /// Subjects map to the documented SPIFFE IDs and file names.
    #[test]
    fn subject_names() {
        let platform = Subject::Platform("ops".into());
        assert_eq!(
            platform.spiffe_uri("example.org"),
            "spiffe://example.org/platform/ops"
        );
        assert_eq!(platform.file_stem(), "platform-ops");
        assert_eq!(
            carrier("contoso").spiffe_uri(DEFAULT_TRUST_DOMAIN),
            "spiffe://opconnect/carrier/contoso"
        );
        assert_eq!(carrier("contoso").file_stem(), "carrier-contoso");
    }

    /// A client certificate carries the SPIFFE URI SAN, the id as CN and only clientAuth, and
    /// chains to the CA for a TLS server.
    #[test]
    fn client_certificate_carries_spiffe_identity() -> TestResult {
        let ca = CertificateAuthority::generate("test CA")?;
        let issued = ca.issue_client(&carrier("contoso"), DEFAULT_TRUST_DOMAIN)?;

        let der = der(&issued.cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der)?;
        assert_eq!(
            sans(&cert),
            vec![GeneralName::URI("spiffe://opconnect/carrier/contoso")]
        );
        assert_eq!(common_name(&cert), Some("contoso"));
        let eku = cert.extended_key_usage()?.ok_or("no EKU")?.value;
        assert!(eku.client_auth);
        assert!(!eku.server_auth);
        assert!(!cert.is_ca());
        verify_client(&ca, &issued.cert_pem)?;
        KeyPair::from_pem(&issued.key_pem)?;
        Ok(())
    }

    /// `issue_client_with_uris` issues certificates with no URI SAN or a foreign trust domain.
    #[test]
    fn client_certificate_with_arbitrary_uris() -> TestResult {
        let ca = CertificateAuthority::generate("test CA")?;

        let bare = ca.issue_client_with_uris("anonymous", &[])?;
        let der_bare = der(&bare.cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der_bare)?;
        assert!(sans(&cert).is_empty());
        verify_client(&ca, &bare.cert_pem)?;

        let foreign_uri = "spiffe://elsewhere/carrier/contoso".to_owned();
        let foreign = ca.issue_client_with_uris("contoso", std::slice::from_ref(&foreign_uri))?;
        let der_foreign = der(&foreign.cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der_foreign)?;
        assert_eq!(sans(&cert), vec![GeneralName::URI(&foreign_uri)]);
        Ok(())
    }

    /// A server certificate covers localhost and both loopback addresses and only serverAuth.
    #[test]
    fn server_certificate_has_dns_and_ip_sans() -> TestResult {
        let ca = CertificateAuthority::generate("test CA")?;
        let names = DEFAULT_SERVER_NAMES.map(String::from);
        let issued = ca.issue_server(&names)?;

        let der = der(&issued.cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der)?;
        let sans = sans(&cert);
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
        assert!(sans.contains(&GeneralName::IPAddress(&v6_loopback)));
        let eku = cert.extended_key_usage()?.ok_or("no EKU")?.value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth);
        for name in names {
            verify_server(&ca, &issued.cert_pem, &name)?;
        }
        assert!(verify_server(&ca, &issued.cert_pem, "example.com").is_err());
        Ok(())
    }

    /// A server certificate needs at least one name.
    #[test]
    fn server_certificate_needs_names() -> TestResult {
        let ca = CertificateAuthority::generate("test CA")?;
        assert!(matches!(ca.issue_server(&[]), Err(PkiError::NoServerNames)));
        Ok(())
    }

    /// A CA survives a round trip through PEM and keeps signing certificates that chain to it.
    #[test]
    fn ca_round_trips_through_pem() -> TestResult {
        let ca = CertificateAuthority::generate(DEV_CA_COMMON_NAME)?;
        let loaded = CertificateAuthority::from_pem(&ca.cert_pem(), &ca.key_pem())?;
        let issued = loaded.issue_client(&carrier("fabrikam"), DEFAULT_TRUST_DOMAIN)?;
        verify_client(&ca, &issued.cert_pem)?;
        Ok(())
    }

    /// Loading rejects a key from another CA and a certificate that is not a CA.
    #[test]
    fn ca_from_pem_rejects_mismatches() -> TestResult {
        let ca = CertificateAuthority::generate("test CA")?;
        let other = CertificateAuthority::generate("other CA")?;
        let mismatched = CertificateAuthority::from_pem(&ca.cert_pem(), &other.key_pem());
        assert!(matches!(mismatched, Err(PkiError::InvalidCa(_))));

        let leaf = ca.issue_client(&carrier("contoso"), DEFAULT_TRUST_DOMAIN)?;
        let not_a_ca = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem);
        assert!(matches!(not_a_ca, Err(PkiError::InvalidCa(_))));
        Ok(())
    }

    /// A CA certificate made elsewhere, valid until `not_after`.
    fn foreign_ca(not_after: SystemTime) -> Result<(String, String), Box<dyn Error>> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn("foreign CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = (SystemTime::now() - DAY).into();
        params.not_after = not_after.into();
        Ok((params.self_signed(&key)?.pem(), key.serialize_pem()))
    }

    /// Certificates issued by a CA that expires sooner than their lifetime expire with it.
    #[test]
    fn issued_certificates_never_outlive_the_ca() -> TestResult {
        let (cert_pem, key_pem) = foreign_ca(SystemTime::now() + DAY * 30)?;
        let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem)?;
        let issued = ca.issue_client(&carrier("contoso"), DEFAULT_TRUST_DOMAIN)?;
        let (ca_der, leaf_der) = (der(&cert_pem)?, der(&issued.cert_pem)?);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der)?;
        let (_, leaf) = X509Certificate::from_der(&leaf_der)?;
        assert!(leaf.validity().not_after <= ca_cert.validity().not_after);
        verify_client(&ca, &issued.cert_pem)?;
        Ok(())
    }

    /// An expired CA is refused rather than used to issue already-invalid certificates.
    #[test]
    fn expired_ca_rejected() -> TestResult {
        let (cert_pem, key_pem) = foreign_ca(SystemTime::now() - DAY / 2)?;
        let loaded = CertificateAuthority::from_pem(&cert_pem, &key_pem);
        assert!(matches!(loaded, Err(PkiError::InvalidCa(_))));
        Ok(())
    }

    /// `init` writes the CA, server and client pairs, with private keys readable by the owner only.
    #[test]
    fn init_writes_files_with_private_keys() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("pki");
        let subjects = [Subject::Platform("ops".into()), carrier("contoso")];
        let written = init(&dir, DEFAULT_TRUST_DOMAIN, &[], &subjects, true, false)?;

        let expected: Vec<PathBuf> = [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "platform-ops.pem",
            "platform-ops.key",
            "carrier-contoso.pem",
            "carrier-contoso.key",
        ]
        .iter()
        .map(|name| dir.join(name))
        .collect();
        assert_eq!(written, expected);
        for path in &written {
            let is_key = path.extension().is_some_and(|ext| ext == "key");
            if is_key {
                assert_eq!(mode(path)?, 0o600, "{}", path.display());
            }
        }

        let ca = CertificateAuthority::from_pem(
            &read(&dir.join("ca.pem"))?,
            &read(&dir.join("ca.key"))?,
        )?;
        let ca_der = der(&ca.cert_pem())?;
        let (_, ca_cert) = X509Certificate::from_der(&ca_der)?;
        assert_eq!(common_name(&ca_cert), Some(DEV_CA_COMMON_NAME));
        verify_server(&ca, &read(&dir.join("server.pem"))?, "::1")?;
        verify_client(&ca, &read(&dir.join("platform-ops.pem"))?)?;
        Ok(())
    }

    /// `init` does not replace an existing CA key unless forced, and then replaces the CA.
    #[test]
    fn init_refuses_to_overwrite_ca() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        init(dir, DEFAULT_TRUST_DOMAIN, &[], &[], false, false)?;
        let first_key = read(&dir.join("ca.key"))?;

        let refused = init(dir, DEFAULT_TRUST_DOMAIN, &[], &[], false, false);
        assert!(
            matches!(refused, Err(PkiError::AlreadyExists(path)) if path == dir.join("ca.key"))
        );
        assert_eq!(read(&dir.join("ca.key"))?, first_key);

        fs::set_permissions(dir.join("ca.key"), Permissions::from_mode(0o644))?;
        init(dir, DEFAULT_TRUST_DOMAIN, &[], &[], false, true)?;
        assert_ne!(read(&dir.join("ca.key"))?, first_key);
        assert_eq!(mode(&dir.join("ca.key"))?, 0o600);
        Ok(())
    }

    /// `issue` signs with the CA already in the directory.
    #[test]
    fn issue_signs_with_existing_ca() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        init(dir, "example.org", &[], &[], false, false)?;
        let (cert_path, key_path) = issue(dir, "example.org", &carrier("fabrikam"))?;
        assert_eq!(cert_path, dir.join("carrier-fabrikam.pem"));
        assert_eq!(key_path, dir.join("carrier-fabrikam.key"));
        assert_eq!(mode(&key_path)?, 0o600);

        let ca = CertificateAuthority::from_pem(
            &read(&dir.join("ca.pem"))?,
            &read(&dir.join("ca.key"))?,
        )?;
        let ca_der = der(&ca.cert_pem())?;
        let (_, ca_cert) = X509Certificate::from_der(&ca_der)?;
        let cert_pem = read(&cert_path)?;
        let cert_der = der(&cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&cert_der)?;
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(
            sans(&cert),
            vec![GeneralName::URI("spiffe://example.org/carrier/fabrikam")]
        );
        verify_client(&ca, &cert_pem)?;
        Ok(())
    }

    /// `issue` without a CA names the missing file.
    #[test]
    fn issue_without_ca_fails() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let error = issue(tmp.path(), DEFAULT_TRUST_DOMAIN, &carrier("contoso"))
            .err()
            .ok_or("issued without a CA")?;
        let PkiError::LoadCa { source, .. } = error else {
            return Err(format!("unexpected error {error:?}").into());
        };
        assert!(
            matches!(*source, PkiError::Read { path, .. } if path == tmp.path().join("ca.pem"))
        );
        Ok(())
    }

    /// Names that do not fit a SPIFFE path segment are rejected, by `init` too.
    #[test]
    fn invalid_names_rejected() -> TestResult {
        for valid in ["ops", "contoso", "c1", "carrier-42", &"a".repeat(63)] {
            assert!(validate_identity_name(valid).is_ok(), "{valid}");
        }
        for invalid in [
            "",
            "a",
            "Contoso",
            "1carrier",
            "-ops",
            "ops-",
            "a_b",
            "a/b",
            "a.b",
            "ünï",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    validate_identity_name(invalid),
                    Err(PkiError::InvalidName { .. })
                ),
                "{invalid}"
            );
        }
        for invalid in ["", "Opconnect", "a/b", "a:b"] {
            assert!(
                matches!(
                    validate_trust_domain(invalid),
                    Err(PkiError::InvalidTrustDomain { .. })
                ),
                "{invalid}"
            );
        }

        let ca = CertificateAuthority::generate("test CA")?;
        assert!(
            ca.issue_client(&carrier("../etc"), DEFAULT_TRUST_DOMAIN)
                .is_err()
        );
        let tmp = tempfile::tempdir()?;
        let result = init(
            tmp.path(),
            DEFAULT_TRUST_DOMAIN,
            &[],
            &[carrier("Bad")],
            false,
            false,
        );
        assert!(matches!(result, Err(PkiError::InvalidName { .. })));
        assert!(!tmp.path().join("ca.key").exists());
        Ok(())
    }

    /// Verifies `cert_pem` against the CA with the CRL in `crl_pem`, as the server does.
    fn verify_client_with_crl(
        ca: &CertificateAuthority,
        cert_pem: &str,
        crl_pem: &str,
    ) -> TestResult {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let crl = parse_x509_pem(crl_pem.as_bytes())?.1.contents;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider)
            .with_crls([rustls::pki_types::CertificateRevocationListDer::from(crl)])
            .build()?;
        verifier.verify_client_cert(&CertificateDer::from(der(cert_pem)?), &[], UnixTime::now())?;
        Ok(())
    }

    /// How many serials the CRL in `path` lists, and its number.
    fn crl_summary(path: &Path) -> Result<(usize, Vec<u8>), Box<dyn Error>> {
        let pem = read(path)?;
        let contents = parse_x509_pem(pem.as_bytes())?.1.contents;
        let (_, crl) = CertificateRevocationList::from_der(&contents)?;
        let number = crl.crl_number().ok_or("no CRL number")?.to_bytes_be();
        Ok((crl.iter_revoked_certificates().count(), number))
    }

    /// `revoke` writes a CRL that makes rustls refuse the revoked certificate and only it; a
    /// second revocation keeps the first serial and raises the CRL number.
    #[test]
    fn revoke_writes_and_extends_the_crl() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        let ops = Subject::Platform("ops".into());
        init(
            dir,
            DEFAULT_TRUST_DOMAIN,
            &[],
            &[ops.clone(), carrier("contoso"), carrier("fabrikam")],
            false,
            false,
        )?;
        let ca = CertificateAuthority::from_pem(
            &read(&dir.join("ca.pem"))?,
            &read(&dir.join("ca.key"))?,
        )?;
        let cert = |stem: &str| read(&dir.join(format!("{stem}.pem")));

        let crl_path = revoke(dir, &ops)?;
        assert_eq!(crl_path, dir.join(CRL_FILE_NAME));
        assert_eq!(mode(&crl_path)?, 0o644);
        let crl = read(&crl_path)?;
        assert!(verify_client_with_crl(&ca, &cert("platform-ops")?, &crl).is_err());
        verify_client_with_crl(&ca, &cert("carrier-contoso")?, &crl)?;
        assert_eq!(crl_summary(&crl_path)?, (1, vec![1]));

        revoke(dir, &carrier("contoso"))?;
        let crl = read(&crl_path)?;
        assert!(verify_client_with_crl(&ca, &cert("platform-ops")?, &crl).is_err());
        assert!(verify_client_with_crl(&ca, &cert("carrier-contoso")?, &crl).is_err());
        verify_client_with_crl(&ca, &cert("carrier-fabrikam")?, &crl)?;
        assert_eq!(crl_summary(&crl_path)?, (2, vec![2]));

        // Revoking again lists the serial once.
        revoke(dir, &carrier("contoso"))?;
        assert_eq!(crl_summary(&crl_path)?.0, 2);

        // A reissued certificate has a new serial and is not revoked.
        issue(dir, DEFAULT_TRUST_DOMAIN, &carrier("contoso"))?;
        verify_client_with_crl(&ca, &cert("carrier-contoso")?, &read(&crl_path)?)?;
        Ok(())
    }

    /// `revoke` refuses an identity without a certificate and a CRL of another CA.
    #[test]
    fn revoke_refuses_missing_and_foreign_files() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        init(
            dir,
            DEFAULT_TRUST_DOMAIN,
            &[],
            &[carrier("contoso")],
            false,
            false,
        )?;
        let missing = revoke(dir, &carrier("globex"));
        assert!(matches!(missing, Err(PkiError::Read { .. })), "{missing:?}");

        let other = tempfile::tempdir()?;
        init(
            other.path(),
            DEFAULT_TRUST_DOMAIN,
            &[],
            &[carrier("contoso")],
            false,
            false,
        )?;
        revoke(other.path(), &carrier("contoso"))?;
        fs::copy(other.path().join(CRL_FILE_NAME), dir.join(CRL_FILE_NAME))?;
        let foreign = revoke(dir, &carrier("contoso"));
        assert!(
            matches!(foreign, Err(PkiError::ForeignIssuer(_))),
            "{foreign:?}"
        );
        Ok(())
    }

    /// No writer follows a symbolic link: `issue`, `init` and `revoke` refuse, write nothing
    /// through it and leave no new file beside it.
    #[test]
    fn symlinks_are_never_written_through() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("pki");
        init(&dir, DEFAULT_TRUST_DOMAIN, &[], &[], false, false)?;
        let target = tmp.path().join("stolen");
        fs::write(&target, "untouched")?;

        std::os::unix::fs::symlink(&target, dir.join("carrier-contoso.key"))?;
        let refused = issue(&dir, DEFAULT_TRUST_DOMAIN, &carrier("contoso"));
        assert!(matches!(refused, Err(PkiError::Symlink(_))), "{refused:?}");
        assert!(!dir.join("carrier-contoso.pem").exists());

        let ca_key = read(&dir.join("ca.key"))?;
        fs::remove_file(dir.join("server.pem"))?;
        std::os::unix::fs::symlink(&target, dir.join("server.pem"))?;
        let refused = init(&dir, DEFAULT_TRUST_DOMAIN, &[], &[], false, true);
        assert!(matches!(refused, Err(PkiError::Symlink(_))), "{refused:?}");
        assert_eq!(
            read(&dir.join("ca.key"))?,
            ca_key,
            "init wrote before refusing"
        );

        fs::remove_file(dir.join("carrier-contoso.key"))?;
        issue(&dir, DEFAULT_TRUST_DOMAIN, &carrier("contoso"))?;
        std::os::unix::fs::symlink(&target, dir.join(CRL_FILE_NAME))?;
        let refused = revoke(&dir, &carrier("contoso"));
        assert!(matches!(refused, Err(PkiError::Symlink(_))), "{refused:?}");

        assert_eq!(fs::read_to_string(&target)?, "untouched");
        assert!(
            fs::symlink_metadata(dir.join("server.pem"))?
                .file_type()
                .is_symlink()
        );
        Ok(())
    }

    /// Replacing an existing key keeps mode 0600 and leaves no temporary file.
    #[test]
    fn rewritten_files_have_their_mode_and_no_leftovers() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        init(
            dir,
            DEFAULT_TRUST_DOMAIN,
            &[],
            &[carrier("contoso")],
            false,
            false,
        )?;
        fs::set_permissions(
            dir.join("carrier-contoso.key"),
            Permissions::from_mode(0o666),
        )?;
        issue(dir, DEFAULT_TRUST_DOMAIN, &carrier("contoso"))?;
        assert_eq!(mode(&dir.join("carrier-contoso.key"))?, 0o600);
        assert_eq!(mode(&dir.join("carrier-contoso.pem"))?, 0o644);
        let leftovers: Vec<_> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        Ok(())
    }

    /// CRL numbers count up across byte boundaries; serials compare without sign padding.
    #[test]
    fn crl_number_arithmetic() {
        assert_eq!(increment(&[0]), [1]);
        assert_eq!(increment(&[0x7f]), [0x80]);
        assert_eq!(increment(&[0xff]), [1, 0]);
        assert_eq!(increment(&[1, 0xff, 0xff]), [2, 0, 0]);
        assert_eq!(unsigned(&[0, 0x80, 1]), unsigned(&[0x80, 1]));
    }
}
