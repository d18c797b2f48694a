//! Who is calling: the SPIFFE identity in the client certificate, read once per connection (the
//! first request parses it, `PeerInfo` keeps it) and checked on every request by
//! [`IdentityLayer`], which also gives the request its id and opens its tracing span.
//!
//! The TLS handshake (`server::tls`) already proved the certificate was signed by the client
//! CA and is not revoked, and put it in the request's [`PeerInfo`]; this module only reads
//! which identity it names. Whether a carrier is registered and active is checked
//! against the store by `api::Authorizer`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::metrics::StreamMetrics;
use crate::rpc_log::{Call, RequestId};
use crate::server::health::DbCheck;
use crate::server::tls::PeerInfo;

/// The identity a client certificate proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `spiffe://<trust-domain>/carrier/<id>`.
    Carrier(CarrierId),
    /// `spiffe://<trust-domain>/platform/<name>`.
    Platform(String),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Carrier(id) => write!(f, "carrier/{id}"),
            Self::Platform(name) => write!(f, "platform/{name}"),
        }
    }
}

/// The URI scheme of SPIFFE IDs. SPIFFE requires it in lower case; a URI whose scheme matches
/// only case-insensitively still counts as a SPIFFE URI (so it cannot hide a second identity)
/// but is refused.
const SPIFFE_SCHEME: &str = "spiffe://";

/// Reads the caller from the leaf certificate's URI SANs. Exactly one SPIFFE URI must be
/// present (other URIs are ignored), and it must be exactly
/// `spiffe://<trust_domain>/carrier/<id>` or `spiffe://<trust_domain>/platform/<name>`, compared
/// byte for byte: no other trust domain (nor one that merely starts with `trust_domain`), no
/// port, user info, query or fragment, no extra path segments, no percent-decoding, no case
/// folding. Anything else is refused with the reason why.
pub fn caller_from_certificate(leaf: &[u8], trust_domain: &str) -> Result<Caller, String> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|_| "the client certificate cannot be parsed".to_owned())?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "the client certificate's subject alternative names are malformed")?
        .ok_or("the client certificate has no SPIFFE URI SAN")?;
    let spiffe: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if is_spiffe_uri(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = spiffe.as_slice() else {
        return Err("the client certificate must carry exactly one SPIFFE URI SAN".into());
    };
    caller_from_spiffe_id(uri, trust_domain)
}

/// Whether `uri`'s scheme is `spiffe`, in any case.
fn is_spiffe_uri(uri: &str) -> bool {
    uri.get(..SPIFFE_SCHEME.len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(SPIFFE_SCHEME))
}

/// The caller a SPIFFE ID names; see [`caller_from_certificate`].
fn caller_from_spiffe_id(uri: &str, trust_domain: &str) -> Result<Caller, String> {
    let rest = uri
        .strip_prefix(SPIFFE_SCHEME)
        .ok_or("the SPIFFE ID's scheme must be lower-case spiffe://")?;
    // The authority ends at the first '/': the whole of it must be the trust domain, so that
    // `opconnect.evil` or `opconnect:443` is not taken for `opconnect`.
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority != trust_domain {
        return Err(format!(
            "the SPIFFE identity is not in trust domain {trust_domain}"
        ));
    }
    let shape = || "the SPIFFE identity must be .../carrier/<id> or .../platform/<name>".to_owned();
    let mut segments = path.split('/');
    let (Some(kind), Some(name), None) = (segments.next(), segments.next(), segments.next()) else {
        return Err(shape());
    };
    // CarrierId admits only a-z, 0-9 and '-': '%', '?', '#' and upper case never pass.
    match kind {
        "carrier" => CarrierId::parse(name)
            .map(Caller::Carrier)
            .map_err(|e| format!("carrier id in the SPIFFE identity {e}")),
        "platform" => CarrierId::parse(name)
            .map(|_| Caller::Platform(name.to_owned()))
            .map_err(|e| format!("platform name in the SPIFFE identity {e}")),
        _ => Err(shape()),
    }
}

/// The caller the client certificate of the connection a request came on names.
fn peer_caller<B>(req: &http::Request<B>, trust_domain: &str) -> Result<Caller, String> {
    match req.extensions().get::<PeerInfo>() {
        Some(peer) => peer.caller(trust_domain),
        None => Err("no client certificate".to_owned()),
    }
}

/// The address of the client a request came from, for log lines.
fn peer_addr<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<PeerInfo>()
        .map(PeerInfo::remote_addr)
}

/// Tower layer that gives every request its request id, reads its caller, refuses requests
/// without a usable identity with `UNAUTHENTICATED`, stores the [`Caller`] in the request
/// extensions, runs the request inside a span carrying method, caller and request id, and
/// writes the per-RPC line when the call ends (`rpc_log`). Every response carries the request
/// id in its `x-request-id` header, refusals included.
#[derive(Debug, Clone)]
pub struct IdentityLayer {
    trust_domain: Arc<str>,
    /// Nudged when a call ends `UNAVAILABLE`, so health checks the database at once.
    db_check: DbCheck,
    /// Where every call is counted.
    metrics: Arc<StreamMetrics>,
}

impl IdentityLayer {
    /// A layer accepting identities of `trust_domain`, counting every call in `metrics`.
    pub(crate) fn new(trust_domain: &str, db_check: DbCheck, metrics: Arc<StreamMetrics>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            db_check,
            metrics,
        }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService {
            inner,
            trust_domain: self.trust_domain.clone(),
            db_check: self.db_check.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`IdentityLayer`].
#[derive(Debug, Clone)]
pub struct IdentityService<S> {
    inner: S,
    trust_domain: Arc<str>,
    db_check: DbCheck,
    metrics: Arc<StreamMetrics>,
}

impl<S, B> Service<http::Request<B>> for IdentityService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let request_id = RequestId::of(&req);
        let method = req.uri().path().to_owned();
        let caller = match peer_caller(&req, &self.trust_domain) {
            Ok(caller) => caller,
            Err(why) => {
                let peer = peer_addr(&req).map(|addr| addr.to_string());
                tracing::warn!(
                    %method,
                    %why,
                    peer = peer.as_deref().unwrap_or("unknown"),
                    request_id = request_id.as_str(),
                    "refused: no usable identity"
                );
                let mut response = tonic::Status::from(ApiError::identity_missing(why)).into_http();
                request_id.stamp(&mut response);
                self.metrics
                    .rpc(&method, "UNAUTHENTICATED", "", started.elapsed());
                return Box::pin(async move { Ok(response) });
            }
        };
        let span = tracing::info_span!(
            "rpc",
            %method,
            caller = %caller,
            request_id = request_id.as_str()
        );
        let carrier = match &caller {
            Caller::Carrier(id) => id.to_string(),
            Caller::Platform(_) => String::new(),
        };
        let call = Call {
            method,
            caller: caller.to_string(),
            request_id,
            started,
            on_unavailable: Some(self.db_check.clone()),
            carrier,
            metrics: Some(self.metrics.clone()),
        };
        req.extensions_mut().insert(caller);
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(req).instrument(span);
        // The end-of-call line is written outside the span: it carries the span's fields.
        Box::pin(async move { Ok(crate::rpc_log::log_response(response.await?, call)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertificateAuthority;

    const DOMAIN: &str = "opconnect";

    /// The DER of a client certificate carrying `uris` as URI SANs.
    fn leaf_with(uris: &[&str]) -> Vec<u8> {
        let ca = CertificateAuthority::generate("identity test CA").unwrap();
        let uris: Vec<String> = uris.iter().map(|u| (*u).to_owned()).collect();
        let issued = ca.issue_client_with_uris("test", &uris).unwrap();
        x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1
            .contents
    }

    fn caller(uris: &[&str]) -> Result<Caller, String> {
        caller_from_certificate(&leaf_with(uris), DOMAIN)
    }

    fn carrier(id: &str) -> Caller {
        Caller::Carrier(CarrierId::parse(id).unwrap())
    }

    /// The two documented shapes are read as carrier and platform callers.
    #[test]
    fn carrier_and_platform_identities() {
        assert_eq!(
            caller(&["spiffe://opconnect/carrier/contoso"]),
            Ok(carrier("contoso"))
        );
        assert_eq!(
            caller(&["spiffe://opconnect/platform/ops"]),
            Ok(Caller::Platform("ops".into()))
        );
    }

    /// Two SPIFFE URIs are ambiguous and refused, also when one differs only in the case of
    /// its scheme; a SPIFFE URI beside an https URI is accepted.
    #[test]
    fn several_uri_sans() {
        assert!(
            caller(&[
                "spiffe://opconnect/carrier/contoso",
                "spiffe://opconnect/platform/ops"
            ])
            .is_err()
        );
        assert!(
            caller(&[
                "SPIFFE://opconnect/platform/ops",
                "spiffe://opconnect/carrier/contoso"
            ])
            .is_err()
        );
        assert_eq!(
            caller(&[
                "https://contoso.example/",
                "spiffe://opconnect/carrier/contoso"
            ]),
            Ok(carrier("contoso"))
        );
        assert!(caller(&["https://contoso.example/"]).is_err());
        assert!(caller(&[]).is_err());
    }

    /// The path is exactly two segments: no extra, empty or trailing ones.
    #[test]
    fn extra_path_segments_are_refused() {
        for uri in [
            "spiffe://opconnect/carrier/a/b",
            "spiffe://opconnect/carrier/contoso/",
            "spiffe://opconnect/carrier//contoso",
            "spiffe://opconnect//carrier/contoso",
            "spiffe://opconnect/carrier",
            "spiffe://opconnect/carrier/",
            "spiffe://opconnect",
            "spiffe://opconnect/",
            "spiffe://opconnect/platform/ops/admin",
            "spiffe://opconnect/robot/contoso",
        ] {
            assert!(caller(&[uri]).is_err(), "{uri}");
        }
    }

    /// Percent-encoded names are not decoded, and so never match an id.
    #[test]
    fn percent_encoding_is_refused() {
        for uri in [
            "spiffe://opconnect/carrier/con%74oso",
            "spiffe://opconnect/%63arrier/contoso",
            "spiffe://opconnect/carrier/contoso%2Fother",
            "spiffe://op%63onnect/carrier/contoso",
        ] {
            assert!(caller(&[uri]).is_err(), "{uri}");
        }
    }

    /// Nothing is case-folded: trust domain, kind, name and scheme must be lower case.
    #[test]
    fn upper_case_is_refused() {
        for uri in [
            "spiffe://OPCONNECT/carrier/x1",
            "spiffe://Opconnect/carrier/x1",
            "spiffe://opconnect/Carrier/x1",
            "spiffe://opconnect/PLATFORM/ops",
            "spiffe://opconnect/carrier/Contoso",
            "SPIFFE://opconnect/carrier/contoso",
            "Spiffe://opconnect/carrier/contoso",
        ] {
            assert!(caller(&[uri]).is_err(), "{uri}");
        }
    }

    /// Only the configured trust domain, whole: not another, not one it is a prefix of, not
    /// one that is a prefix of it, not with a port, user info, query or fragment.
    #[test]
    fn trust_domain_must_match_exactly() {
        for uri in [
            "spiffe://elsewhere/carrier/contoso",
            "spiffe://opconnect.evil/carrier/contoso",
            "spiffe://opconnectevil/carrier/contoso",
            "spiffe://opconnect-evil/carrier/contoso",
            "spiffe://opconnec/carrier/contoso",
            "spiffe://opconnect:443/carrier/contoso",
            "spiffe://user@opconnect/carrier/contoso",
            "spiffe://evil/opconnect/carrier/contoso",
            "spiffe:///carrier/contoso",
            "spiffe://opconnect/carrier/contoso?x=1",
            "spiffe://opconnect/carrier/contoso#f",
        ] {
            assert!(caller(&[uri]).is_err(), "{uri}");
        }
        let leaf = leaf_with(&["spiffe://opconnect.evil/carrier/contoso"]);
        assert_eq!(
            caller_from_certificate(&leaf, "opconnect.evil"),
            Ok(carrier("contoso"))
        );
    }

    /// A certificate that is not DER is refused, not a panic.
    #[test]
    fn garbage_is_refused() {
        assert!(caller_from_certificate(b"not a certificate", DOMAIN).is_err());
    }
}
