//! Revocation: `certs revoke` adds an identity's certificate to the CA's CRL (`crl.pem`),
//! keeping the serials already listed and raising the CRL number.

use super::*;

/// `certs revoke`: adds the certificate `dir/<file_stem>.pem` to the CA's revocation list
/// `dir/crl.pem` (created when missing), keeping every serial already listed and raising the
/// CRL number by one. The certificate and an existing CRL must have been issued by the CA in
/// `dir`. A serial already listed keeps its first revocation time. Returns the CRL's path.
pub fn revoke(dir: &Path, subject: &Subject) -> Result<PathBuf, PkiError> {
    validate_identity_name(subject.name())?;
    let ca = load_ca(dir).map_err(|source| PkiError::LoadCa {
        dir: dir.to_owned(),
        source: Box::new(source),
    })?;
    let ca_der = ca.cert_der()?;
    let (_, ca_cert) = X509Certificate::from_der(&ca_der)
        .map_err(|e| PkiError::InvalidCa(format!("cannot parse the certificate: {e}")))?;
    let crl_path = dir.join(CRL_FILE_NAME);
    refuse_unsafe_target(&crl_path)?;

    let cert_path = dir.join(format!("{}.pem", subject.file_stem()));
    let serial = certificate_serial(&cert_path, &ca_cert)?;
    let CrlContents {
        mut revoked,
        number,
    } = match fs::symlink_metadata(&crl_path) {
        Ok(_) => crl_contents(&crl_path, &ca_cert)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => CrlContents {
            revoked: Vec::new(),
            number: vec![0],
        },
        Err(source) => {
            return Err(PkiError::Read {
                path: crl_path,
                source,
            });
        }
    };
    if !revoked
        .iter()
        .any(|(listed, _)| unsigned(listed) == unsigned(&serial))
    {
        revoked.push((serial, OffsetDateTime::now_utc()));
    }
    let crl = ca.revocation_list(&revoked, &increment(&number))?;
    write_file(&crl_path, &crl, PUBLIC_FILE_MODE)?;
    Ok(crl_path)
}

/// The serial number of the certificate in `path`, which `ca` must have issued (by name and
/// signature: two CAs made by `certs init` have the same name).
fn certificate_serial(path: &Path, ca: &X509Certificate<'_>) -> Result<Vec<u8>, PkiError> {
    let pem = read(path)?;
    let parse_error = |reason: String| PkiError::Parse {
        path: path.to_owned(),
        reason,
    };
    let (_, pem) = parse_x509_pem(pem.as_bytes()).map_err(|e| parse_error(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| parse_error(e.to_string()))?;
    let signed_by_ca = cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok();
    if !signed_by_ca {
        return Err(PkiError::ForeignIssuer(path.to_owned()));
    }
    Ok(cert.raw_serial().to_vec())
}

/// What `revoke` keeps of an existing CRL.
struct CrlContents {
    revoked: Vec<RevokedSerial>,
    /// The CRL number, big-endian unsigned.
    number: Vec<u8>,
}

/// The revoked serials and the CRL number of the CRL in `path`, which `ca` must have issued
/// (name and signature). A CRL without a number counts as number 0.
fn crl_contents(path: &Path, ca: &X509Certificate<'_>) -> Result<CrlContents, PkiError> {
    let pem = read(path)?;
    let parse_error = |reason: String| PkiError::Parse {
        path: path.to_owned(),
        reason,
    };
    let (_, pem) = parse_x509_pem(pem.as_bytes()).map_err(|e| parse_error(e.to_string()))?;
    let (_, crl) = CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| parse_error(e.to_string()))?;
    let signed_by_ca = crl.issuer().as_raw() == ca.subject().as_raw()
        && crl.verify_signature(ca.public_key()).is_ok();
    if !signed_by_ca {
        return Err(PkiError::ForeignIssuer(path.to_owned()));
    }
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| {
            (
                entry.raw_serial().to_vec(),
                entry.revocation_date.to_datetime(),
            )
        })
        .collect();
    let number = crl
        .crl_number()
        .map_or_else(|| vec![0], |n| n.to_bytes_be());
    Ok(CrlContents { revoked, number })
}

/// A DER INTEGER's content without the leading zero bytes that keep it positive, so that two
/// encodings of one serial compare equal.
pub(super) fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The big-endian unsigned number one higher than `number`.
pub(super) fn increment(number: &[u8]) -> Vec<u8> {
    let mut out = number.to_vec();
    for byte in out.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            return out;
        }
    }
    out.insert(0, 1);
    out
}
