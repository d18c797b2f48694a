//! [`DurationUploader`]: `ReportCallDurations` in batches under a client-chosen `upload_id`,
//! retried safely.
//!
//! The protocol after a failed attempt: if the error may pass (see
//! [`super::retry::is_retryable`]), wait, then ask `GetUpload(upload_id)`. A summary there
//! means the upload completed and only its response was lost: that summary is the answer.
//! `NOT_FOUND` means it did not complete: send the whole upload again under the same id. The
//! server keys durations by (carrier, `call_id`), so records committed by the broken attempt
//! come back as duplicates, never twice; the stored set converges to the file's, and the
//! final summary counts them under `duplicates`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::transport::Channel;
use tonic::{Code, Status};

use super::ClientError;
use super::retry::{Backoff, BackoffPolicy};
use crate::pb::v1 as pb;
use crate::pb::v1::call_duration_service_client::CallDurationServiceClient;

/// Options of a [`DurationUploader`].
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The upload's id (1 to 128 printable ASCII characters); `None`: a fresh random one.
    pub upload_id: Option<String>,
    /// Records per request message.
    pub records_per_message: usize,
    /// `max_attempts` bounds the retries (default 8).
    pub backoff: BackoffPolicy,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            upload_id: None,
            records_per_message: 1000,
            backoff: BackoffPolicy {
                max_attempts: Some(8),
                ..BackoffPolicy::default()
            },
        }
    }
}

/// Uploads call durations; see the module documentation.
pub struct DurationUploader {
    client: CallDurationServiceClient<Channel>,
    upload_id: String,
    records_per_message: usize,
    backoff: Backoff,
    /// Records handed to the transport in the current attempt, for progress displays.
    sent: Arc<AtomicU64>,
    attempts: u32,
}

impl DurationUploader {
    /// An uploader over `channel`; one uploader is one upload id, sent until it completes.
    pub fn new(channel: Channel, options: UploadOptions) -> Self {
        Self {
            client: CallDurationServiceClient::new(channel),
            upload_id: options.upload_id.unwrap_or_else(fresh_upload_id),
            records_per_message: options.records_per_message.max(1),
            backoff: Backoff::new(options.backoff),
            sent: Arc::default(),
            attempts: 0,
        }
    }

    /// The id the upload is stored under (for `GetUpload` later).
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// A counter of the records sent by the current attempt (it restarts from zero when an
    /// attempt is retried), for a progress bar.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }

    /// Streams sent so far (1 when nothing had to be retried).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Uploads `records` and returns the server's summary.
    pub async fn upload(
        &mut self,
        records: Vec<pb::CallDuration>,
    ) -> Result<pb::UploadSummary, ClientError> {
        let records = Arc::new(records);
        self.upload_from(move || {
            let records = records.clone();
            (0..records.len()).map(move |i| records[i].clone())
        })
        .await
    }

    /// Uploads the records `source` yields; `source` is called again for every resend, so it
    /// must yield the same records each time (re-read the file).
    pub async fn upload_from<F, I>(
        &mut self,
        mut source: F,
    ) -> Result<pb::UploadSummary, ClientError>
    where
        F: FnMut() -> I,
        I: Iterator<Item = pb::CallDuration> + Send + 'static,
    {
        loop {
            let error = match self.send(source()).await {
                Ok(summary) => return Ok(summary),
                Err(status) => status,
            };
            // Find out whether the broken attempt completed before sending again.
            let mut error = error;
            loop {
                let Some(delay) = self.backoff.next_delay(&error) else {
                    return Err(error.into());
                };
                tracing::warn!(
                    code = ?error.code(),
                    message = error.message(),
                    upload_id = self.upload_id,
                    retry_in_ms = delay.as_millis() as u64,
                    "upload failed; checking whether it completed"
                );
                tokio::time::sleep(delay).await;
                match self.stored_summary().await {
                    Ok(Some(summary)) => return Ok(summary),
                    Ok(None) => break,
                    Err(status) => error = status,
                }
            }
        }
    }

    /// One attempt: the whole stream, then the response.
    async fn send<I>(&mut self, records: I) -> Result<pb::UploadSummary, Status>
    where
        I: Iterator<Item = pb::CallDuration> + Send + 'static,
    {
        self.attempts += 1;
        self.sent.store(0, Ordering::Relaxed);
        let messages = Messages {
            records,
            per_message: self.records_per_message,
            upload_id: Some(self.upload_id.clone()),
            sent: self.sent.clone(),
        };
        let response = self
            .client
            .report_call_durations(futures::stream::iter(messages))
            .await?;
        response
            .into_inner()
            .summary
            .ok_or_else(|| Status::internal("the response carries no summary"))
    }

    /// The summary stored under the upload id, `None` when the server has none.
    async fn stored_summary(&mut self) -> Result<Option<pb::UploadSummary>, Status> {
        let request = pb::GetUploadRequest {
            upload_id: self.upload_id.clone(),
        };
        match self.client.get_upload(request).await {
            Ok(response) => Ok(response.into_inner().summary),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }
}

/// Records grouped into request messages; the first carries the upload id.
struct Messages<I> {
    records: I,
    per_message: usize,
    /// Taken by the first message.
    upload_id: Option<String>,
    sent: Arc<AtomicU64>,
}

impl<I: Iterator<Item = pb::CallDuration>> Iterator for Messages<I> {
    type Item = pb::ReportCallDurationsRequest;

    fn next(&mut self) -> Option<Self::Item> {
        let records: Vec<pb::CallDuration> = self.records.by_ref().take(self.per_message).collect();
        let upload_id = self.upload_id.take();
        if records.is_empty() && upload_id.is_none() {
            return None;
        }
        self.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
        Some(pb::ReportCallDurationsRequest {
            upload_id: upload_id.unwrap_or_default(),
            records,
        })
    }
}

/// `up-<unix ms>-<random hex>`: unique enough for a carrier's uploads, readable in logs.
fn fresh_upload_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(millis);
    format!("up-{millis}-{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::v1::call_duration_service_server::{
        CallDurationService, CallDurationServiceServer,
    };
    use std::sync::atomic::AtomicU32;
    use tonic::{Request, Response, Streaming};

    /// A gateway stand-in whose uploads complete but whose answer is lost (`report` says how),
    /// and whose `GetUpload` knows every completed upload.
    struct LostAnswers {
        report: fn() -> Status,
        reports: Arc<AtomicU32>,
    }

    #[tonic::async_trait]
    impl CallDurationService for LostAnswers {
        async fn report_call_durations(
            &self,
            request: Request<Streaming<pb::ReportCallDurationsRequest>>,
        ) -> Result<Response<pb::ReportCallDurationsResponse>, Status> {
            let mut stream = request.into_inner();
            while stream.message().await?.is_some() {}
            self.reports.fetch_add(1, Ordering::SeqCst);
            Err((self.report)())
        }

        async fn get_upload(
            &self,
            request: Request<pb::GetUploadRequest>,
        ) -> Result<Response<pb::GetUploadResponse>, Status> {
            Ok(Response::new(pb::GetUploadResponse {
                summary: Some(pb::UploadSummary {
                    upload_id: request.into_inner().upload_id,
                    received: 3,
                    accepted: 3,
                    ..Default::default()
                }),
            }))
        }

        type ListDiscrepanciesStream =
            futures::stream::Empty<Result<pb::ListDiscrepanciesResponse, Status>>;

        async fn list_discrepancies(
            &self,
            _: Request<pb::ListDiscrepanciesRequest>,
        ) -> Result<Response<Self::ListDiscrepanciesStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    /// Serves `report` on a local port; returns a channel to it and the count of uploads.
    async fn lost_answers(report: fn() -> Status) -> (Channel, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reports = Arc::new(AtomicU32::new(0));
        let service = CallDurationServiceServer::new(LostAnswers {
            report,
            reports: reports.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        (channel, reports)
    }

    fn quick() -> UploadOptions {
        UploadOptions {
            upload_id: Some("u-1".into()),
            records_per_message: 2,
            backoff: BackoffPolicy {
                initial: std::time::Duration::from_millis(1),
                max: std::time::Duration::from_millis(5),
                max_attempts: Some(3),
            },
        }
    }

    /// An upload whose answer was lost to a broken connection is not sent again: the summary
    /// stored under its id is the answer.
    #[tokio::test]
    async fn a_lost_answer_is_found_under_the_upload_id() {
        let (channel, reports) = lost_answers(|| Status::unavailable("connection reset")).await;
        let mut uploader = DurationUploader::new(channel, quick());
        let records = vec![pb::CallDuration::default(); 3];
        let summary = uploader.upload(records).await.unwrap();
        assert_eq!(summary.upload_id, "u-1");
        assert_eq!(summary.accepted, 3);
        assert_eq!(reports.load(Ordering::SeqCst), 1);
        assert_eq!(uploader.attempts(), 1);
    }

    /// A refusal that waiting cannot fix is returned at once, without a lookup or a resend.
    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let (channel, reports) = lost_answers(|| Status::invalid_argument("bad upload_id")).await;
        let mut uploader = DurationUploader::new(channel, quick());
        let error = uploader.upload(Vec::new()).await.unwrap_err();
        assert_eq!(
            error.status().map(Status::code),
            Some(Code::InvalidArgument)
        );
        assert_eq!(reports.load(Ordering::SeqCst), 1);
    }

    /// Records are grouped by `per_message`; the id rides on the first message only, and an
    /// empty upload is still one message (so the summary is stored under its id).
    #[test]
    fn messages() {
        let record = |i: usize| pb::CallDuration {
            call_id: format!("c{i}"),
            ..Default::default()
        };
        let sent = Arc::new(AtomicU64::new(0));
        let batches: Vec<_> = Messages {
            records: (0..5).map(record),
            per_message: 2,
            upload_id: Some("u1".into()),
            sent: sent.clone(),
        }
        .collect();
        let shape: Vec<(&str, usize)> = batches
            .iter()
            .map(|m| (m.upload_id.as_str(), m.records.len()))
            .collect();
        assert_eq!(shape, [("u1", 2), ("", 2), ("", 1)]);
        assert_eq!(sent.load(Ordering::Relaxed), 5);
        let empty: Vec<_> = Messages {
            records: std::iter::empty(),
            per_message: 2,
            upload_id: Some("u2".into()),
            sent,
        }
        .collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].upload_id, "u2");
        let id = fresh_upload_id();
        assert!(
            id.starts_with("up-") && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
        );
    }
}
