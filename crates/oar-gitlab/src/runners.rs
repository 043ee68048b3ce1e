//! Registration, verification and unregistration.

use crate::client::{Client, unexpected};
use crate::error::Error;
use crate::types::{RegisterRunnerRequest, RunnerDetails, Token, VerifyRunnerRequest};
use reqwest::Method;
use serde::Serialize;

impl Client {
    /// Legacy registration with a registration token (`POST /runners`).
    pub async fn register_runner(
        &self,
        req: &RegisterRunnerRequest,
    ) -> Result<RunnerDetails, Error> {
        const EP: &str = "register_runner";
        let resp = self
            .send(EP, || self.request(Method::POST, "runners").json(req))
            .await?;
        match resp.status().as_u16() {
            201 => decode(EP, resp).await,

            410 => Err(Error::Status {
                endpoint: EP,
                status: 410,
                message: "registration with a registration token is disabled on this GitLab; \
                          create the runner in GitLab and use its glrt- token"
                    .into(),
            }),
            _ => Err(unexpected(EP, resp).await),
        }
    }

    /// Verifies a runner token (`POST /runners/verify`). Older GitLab answers a plain-text
    /// body; then the details carry only the token.
    pub async fn verify_runner(&self, req: &VerifyRunnerRequest) -> Result<RunnerDetails, Error> {
        const EP: &str = "verify_runner";
        let resp = self
            .send(EP, || {
                self.request(Method::POST, "runners/verify")
                    .header("RUNNER-TOKEN", req.token.expose())
                    .json(req)
            })
            .await?;
        match resp.status().as_u16() {
            200 => {
                let body = resp.bytes().await.map_err(|e| Error::Transport {
                    endpoint: EP,
                    source: e,
                })?;
                Ok(
                    serde_json::from_slice::<RunnerDetails>(&body).unwrap_or_else(|_| {
                        RunnerDetails {
                            token: req.token.clone(),
                            ..RunnerDetails::default()
                        }
                    }),
                )
            }

            _ => Err(unexpected(EP, resp).await),
        }
    }

    /// Deletes the runner (`DELETE /runners`).
    pub async fn unregister_runner(&self, token: &Token) -> Result<(), Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            token: &'a Token,
        }
        self.delete_expect_204("unregister_runner", "runners", token, &Body { token })
            .await
    }

    /// Deletes only this machine's runner manager (`DELETE /runners/managers`).
    pub async fn unregister_runner_manager(
        &self,
        token: &Token,
        system_id: &str,
    ) -> Result<(), Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            token: &'a Token,
            system_id: &'a str,
        }
        self.delete_expect_204(
            "unregister_runner_manager",
            "runners/managers",
            token,
            &Body { token, system_id },
        )
        .await
    }

    async fn delete_expect_204(
        &self,
        ep: &'static str,
        path: &str,
        token: &Token,
        body: &impl Serialize,
    ) -> Result<(), Error> {
        let resp = self
            .send(ep, || {
                self.request(Method::DELETE, path)
                    .header("RUNNER-TOKEN", token.expose())
                    .json(body)
            })
            .await?;
        match resp.status().as_u16() {
            204 | 200 => Ok(()),

            _ => Err(unexpected(ep, resp).await),
        }
    }

    /// Resets the runner token (`POST /runners/reset_authentication_token`).
    pub async fn reset_token(&self, token: &Token) -> Result<RunnerDetails, Error> {
        const EP: &str = "reset_token";
        #[derive(Serialize)]
        struct Body<'a> {
            token: &'a Token,
        }
        let resp = self
            .send(EP, || {
                self.request(Method::POST, "runners/reset_authentication_token")
                    .header("RUNNER-TOKEN", token.expose())
                    .json(&Body { token })
            })
            .await?;
        match resp.status().as_u16() {
            201 | 200 => decode(EP, resp).await,

            _ => Err(unexpected(EP, resp).await),
        }
    }
}

pub(crate) async fn decode<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    resp: reqwest::Response,
) -> Result<T, Error> {
    let body = resp.bytes().await.map_err(|e| Error::Transport {
        endpoint,
        source: e,
    })?;
    serde_json::from_slice(&body).map_err(|e| Error::Decode {
        endpoint,
        reason: e.to_string(),
    })
}
