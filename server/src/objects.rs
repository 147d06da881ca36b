//! An S3-compatible object store (AWS S3, MinIO, Ceph, moto): where attachments live when
//! `[attachments] s3_endpoint` is set, so that every `mam` process in front of one PostgreSQL
//! reads what any of them received without a shared folder. Requests are signed with AWS
//! Signature Version 4; objects are addressed by path (`ENDPOINT/BUCKET/KEY`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::hex;

/// Where and as whom: the bucket and the credentials (the secret is never printed).
#[derive(Clone)]
pub struct S3 {
    endpoint: String,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3 {}/{} ({})", self.endpoint, self.bucket, self.region)
    }
}

/// An object's size and media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object store: {0}")]
    Http(#[from] reqwest::Error),
    #[error("object store answered {status} to {what}: {body}")]
    Refused {
        status: u16,
        what: String,
        body: String,
    },
}

/// What a signature covers.
struct Request<'a> {
    method: &'a str,
    host: &'a str,
    /// The path, already in URI form (keys here are hex: nothing to encode).
    path: &'a str,
    payload_hash: &'a str,
    extra: &'a [(&'a str, &'a str)],
    /// `YYYYMMDDTHHMMSSZ`
    stamp: &'a str,
    region: &'a str,
    access_key: &'a str,
    secret_key: &'a str,
}

/// AWS Signature Version 4 for S3: the headers to send, `authorization` among them (`host`
/// is signed, and left to the HTTP client to send).
fn sign(r: &Request) -> Vec<(String, String)> {
    let day = &r.stamp[..8];
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), r.host.to_owned()),
        ("x-amz-content-sha256".into(), r.payload_hash.to_owned()),
        ("x-amz-date".into(), r.stamp.to_owned()),
    ];
    for (k, v) in r.extra {
        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let request = format!(
        "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
        r.method, r.path, r.payload_hash
    );
    let scope = format!("{day}/{}/s3/aws4_request", r.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        r.stamp,
        hex(&Sha256::digest(request.as_bytes()))
    );
    let k = mac(format!("AWS4{}", r.secret_key).as_bytes(), day);
    let k = mac(&k, r.region);
    let k = mac(&k, "s3");
    let k = mac(&k, "aws4_request");
    let signature = hex(&mac(&k, &to_sign));
    headers.retain(|(k, _)| k != "host");
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            r.access_key
        ),
    ));
    headers
}

fn mac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

impl S3 {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, key: &str) -> String {
        match key {
            "" => format!("{}/{}", self.endpoint, self.bucket),
            key => format!("{}/{}/{key}", self.endpoint, self.bucket),
        }
    }

    /// The headers that sign a request (SigV4), for `method` on `key` with `payload`.
    fn signed(
        &self,
        method: &str,
        key: &str,
        payload: &[u8],
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let now = crate::now_ms() / 1000;
        let day = sync_protocol::expr::date_of_day(now.div_euclid(86_400)).replace('-', "");
        let secs = now.rem_euclid(86_400);
        let stamp = format!(
            "{day}T{:02}{:02}{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let host = self
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&self.endpoint)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let path = match key {
            "" => format!("/{}", self.bucket),
            key => format!("/{}/{key}", self.bucket),
        };
        sign(&Request {
            method,
            host: &host,
            path: &path,
            payload_hash: &hex(&Sha256::digest(payload)),
            extra,
            stamp: &stamp,
            region: &self.region,
            access_key: &self.access_key,
            secret_key: &self.secret_key,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        body: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response, ObjectError> {
        let headers = self.signed(method.as_str(), key, &body, extra);
        let mut request = self.http.request(method, self.url(key)).body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }

    async fn refused(what: String, response: reqwest::Response) -> ObjectError {
        ObjectError::Refused {
            status: response.status().as_u16(),
            what,
            body: response.text().await.unwrap_or_default(),
        }
    }

    /// Makes the bucket (a bucket there already is fine).
    pub async fn create_bucket(&self) -> Result<(), ObjectError> {
        let r = self.send(reqwest::Method::PUT, "", Vec::new(), &[]).await?;
        match r.status().as_u16() {
            200 | 409 => Ok(()),
            _ => Err(Self::refused("creating the bucket".into(), r).await),
        }
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), ObjectError> {
        let r = self
            .send(
                reqwest::Method::PUT,
                key,
                bytes,
                &[("content-type", media_type)],
            )
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(Self::refused(format!("PUT {key}"), r).await)
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<Head>, ObjectError> {
        let r = self
            .send(reqwest::Method::HEAD, key, Vec::new(), &[])
            .await?;
        match r.status().as_u16() {
            200 => Ok(Some(Head {
                size: r
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
                media_type: r
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
            })),
            404 => Ok(None),
            _ => Err(Self::refused(format!("HEAD {key}"), r).await),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, ObjectError> {
        let r = self
            .send(reqwest::Method::GET, key, Vec::new(), &[])
            .await?;
        match r.status().as_u16() {
            200 => {
                let media_type = r
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                Ok(Some((r.bytes().await?.to_vec(), media_type)))
            }
            404 => Ok(None),
            _ => Err(Self::refused(format!("GET {key}"), r).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own example, "GET Object" in the S3 Signature Version 4 documentation
    /// ("Examples: Signature Calculations in AWS Signature Version 4").
    #[test]
    fn signature_is_awss_get_object_example() {
        let headers = sign(&Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            extra: &[("Range", "bytes=0-9")],
            stamp: "20130524T000000Z",
            region: "us-east-1",
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        });
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's own example of a signing key (Signature Version 4 documentation, "Examples of
    /// how to derive a signing key"), computed by the same steps as `signed`.
    #[test]
    fn signing_key_is_awss_example() {
        let k = mac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215");
        let k = mac(&k, "us-east-1");
        let k = mac(&k, "iam");
        let k = mac(&k, "aws4_request");
        assert_eq!(
            hex(&k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
