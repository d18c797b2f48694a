//! Who is calling: the SPIFFE identity in the client certificate, read once per request by
//! [`IdentityLayer`], which also opens the request's tracing span.
//!
//! The TLS handshake already proved the certificate was signed by the client CA; this module
//! only reads which identity it names. Whether a carrier is registered and active is checked
//! against the store by `api::Authorizer`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::codegen::http;
use tonic::transport::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::domain::ids::CarrierId;
use crate::error::ApiError;

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

/// Reads the caller from the leaf certificate's URI SANs. Exactly one SPIFFE URI of
/// `trust_domain` must be present; anything else is refused with the reason why.
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
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = spiffe.as_slice() else {
        return Err("the client certificate must carry exactly one SPIFFE URI SAN".into());
    };
    let rest = uri
        .strip_prefix("spiffe://")
        .and_then(|r| r.strip_prefix(trust_domain))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("the SPIFFE identity is not in trust domain {trust_domain}"))?;
    match rest.split_once('/') {
        Some(("carrier", id)) => CarrierId::parse(id)
            .map(Caller::Carrier)
            .map_err(|e| format!("carrier id in the SPIFFE identity {e}")),
        Some(("platform", name)) if CarrierId::parse(name).is_ok() => {
            Ok(Caller::Platform(name.to_owned()))
        }
        _ => Err("the SPIFFE identity must be .../carrier/<id> or .../platform/<name>".into()),
    }
}

fn peer_leaf<B>(req: &http::Request<B>) -> Option<CertificateDer<'static>> {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certs| certs.first().cloned())
}

/// Tower layer that reads the caller of every request, refuses requests without a usable
/// identity with `UNAUTHENTICATED`, stores the [`Caller`] in the request extensions and runs
/// the request inside a span carrying caller and method.
#[derive(Debug, Clone)]
pub struct IdentityLayer {
    trust_domain: Arc<str>,
}

impl IdentityLayer {
    /// A layer accepting identities of `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
        }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService {
            inner,
            trust_domain: self.trust_domain.clone(),
        }
    }
}

/// The service of [`IdentityLayer`].
#[derive(Debug, Clone)]
pub struct IdentityService<S> {
    inner: S,
    trust_domain: Arc<str>,
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
        let method = req.uri().path().to_owned();
        let caller = match peer_leaf(&req) {
            Some(leaf) => caller_from_certificate(&leaf, &self.trust_domain),
            None => Err("no client certificate".to_owned()),
        };
        let caller = match caller {
            Ok(caller) => caller,
            Err(why) => {
                tracing::warn!(%method, %why, "refused: no usable identity");
                let status = tonic::Status::from(ApiError::identity_missing(why));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let span = tracing::info_span!("rpc", %method, caller = %caller);
        req.extensions_mut().insert(caller);
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let started = Instant::now();
                let response = inner.call(req).await?;
                Ok(crate::rpc_log::log_response(response, started))
            }
            .instrument(span),
        )
    }
}
