//! One order, start to finish (RFC 8555 section 7.4): new order, one
//! challenge per authorization published to the workers through the
//! master, finalize with a CSR for a fresh ECDSA P-256 key, download the
//! chain. Challenge answers are withdrawn whatever the outcome.

use std::path::Path;
use std::time::Duration;

use baton_shared::channel::certs::{FromHelper, OrderSpec};
use baton_shared::config::acme::Challenge;
use crossbeam_channel::Sender;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};
use tokio::sync::mpsc::UnboundedReceiver;

use super::store;

/// An order's failure, for the log and `GET /status`: what step failed,
/// with the CA's problem document when it sent one.
#[derive(Debug)]
pub struct Failure(pub String);

impl From<instant_acme::Error> for Failure {
    fn from(e: instant_acme::Error) -> Failure {
        Failure(match e {
            instant_acme::Error::Api(p) => problem(&p),
            e => e.to_string(),
        })
    }
}

/// A problem document as one line: type, detail, status, subproblems.
pub fn problem(p: &Problem) -> String {
    let mut s = format!(
        "{} ({}){}",
        p.detail.as_deref().unwrap_or("no detail"),
        p.r#type.as_deref().unwrap_or("no type"),
        p.status.map_or(String::new(), |s| format!(" HTTP {s}"))
    );
    for sub in &p.subproblems {
        s.push_str(&format!("; {sub:?}"));
    }
    s
}

/// The issued chain and its key, PEM.
pub struct Issued {
    pub chain: String,
    pub key: String,
}

/// Loads the account for (directory, email) from `acme_dir`, or creates it
/// on the CA and stores its credentials.
pub async fn account(
    dir: &Path,
    ca_file: Option<&Path>,
    spec: &OrderSpec,
) -> Result<Account, Failure> {
    let builder = || match ca_file {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let path = store::account_path(dir, &spec.directory, &spec.email);
    if let Ok(text) = std::fs::read(&path) {
        match serde_json::from_slice::<AccountCredentials>(&text) {
            Ok(creds) => return Ok(builder()?.from_credentials(creds).await?),
            Err(e) => log::warn!(
                "account file {} does not parse ({e}): creating a new account",
                path.display()
            ),
        }
    }
    let contact = format!("mailto:{}", spec.email);
    let contacts: Vec<&str> = if spec.email.is_empty() {
        Vec::new()
    } else {
        vec![contact.as_str()]
    };
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            spec.directory.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_vec(&creds).map_err(|e| Failure(e.to_string()))?;
    store::write_atomic(&path, &json).map_err(|e| Failure(e.to_string()))?;
    log::info!(
        "ACME account created on {} ({})",
        spec.directory,
        path.display()
    );
    Ok(account)
}

/// Runs one order for `spec`; `out` reaches the master (challenge answers
/// to publish and withdraw).
pub async fn run(
    account: &Account,
    spec: &OrderSpec,
    out: &Sender<FromHelper>,
    confirmed: &mut UnboundedReceiver<()>,
) -> Result<Issued, Failure> {
    let mut published = Vec::new();
    let result = steps(account, spec, out, confirmed, &mut published).await;
    for msg in published {
        let _ = out.send(msg);
    }
    result
}

/// How long the workers may take to confirm a challenge answer.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// Sends a challenge answer to the master and waits until every worker
/// serves it (`ToHelper::Published`): the CA may validate the moment it is
/// told to.
async fn publish(
    msg: FromHelper,
    out: &Sender<FromHelper>,
    confirmed: &mut UnboundedReceiver<()>,
) -> Result<(), Failure> {
    // A confirmation left over from an earlier order is not this one's.
    while confirmed.try_recv().is_ok() {}
    out.send(msg)
        .map_err(|_| Failure("the helper is shutting down".into()))?;
    match tokio::time::timeout(CONFIRM_WITHIN, confirmed.recv()).await {
        Ok(Some(())) => Ok(()),
        Ok(None) => Err(Failure("the master is gone".into())),
        Err(_) => {
            log::warn!(
                "the workers did not confirm a challenge answer within {}s; going on",
                CONFIRM_WITHIN.as_secs()
            );
            Ok(())
        }
    }
}

async fn steps(
    account: &Account,
    spec: &OrderSpec,
    out: &Sender<FromHelper>,
    confirmed: &mut UnboundedReceiver<()>,
    published: &mut Vec<FromHelper>,
) -> Result<Issued, Failure> {
    let ids: Vec<Identifier> = spec
        .names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let kind = match spec.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(Failure(format!(
                    "authorization for {:?} is {status:?}",
                    authz.identifier()
                )));
            }
        }
        let name = match &authz.identifier().identifier {
            Identifier::Dns(n) => n.clone(),
            other => return Err(Failure(format!("unexpected identifier {other:?}"))),
        };
        let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            Failure(format!(
                "the CA offers no {} challenge for {name}",
                spec.challenge.as_str()
            ))
        })?;
        let key_auth = challenge.key_authorization();
        match spec.challenge {
            Challenge::Http01 => {
                let token = challenge.token.clone();
                published.push(FromHelper::HttpDone {
                    token: token.clone(),
                });
                let answer = FromHelper::Http {
                    token,
                    key_auth: key_auth.as_str().to_owned(),
                };
                publish(answer, out, confirmed).await?;
            }
            Challenge::TlsAlpn01 => {
                let (cert_pem, key_pem) = alpn_certificate(&name, key_auth.digest().as_ref())?;
                published.push(FromHelper::AlpnDone { name: name.clone() });
                let answer = FromHelper::Alpn {
                    name: name.clone(),
                    cert_pem,
                    key_pem,
                };
                publish(answer, out, confirmed).await?;
            }
        }
        challenge.set_ready().await?;
    }
    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(90));
    let status = order.poll_ready(&poll).await?;
    if status != OrderStatus::Ready {
        return Err(Failure(order_failure(&mut order, status).await));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| Failure(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(spec.names.clone())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| Failure(format!("cannot make the CSR: {e}")))?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&poll).await?;
    Ok(Issued {
        chain,
        key: key.serialize_pem(),
    })
}

/// Why an order did not become ready: the order's problem, else the first
/// failed challenge's.
async fn order_failure(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let state = order.state();
    if let Some(p) = &state.error {
        return format!("order {status:?}: {}", problem(p));
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                return format!(
                    "order {status:?}: {:?} challenge for {:?} failed: {}",
                    c.r#type,
                    authz.identifier(),
                    problem(p)
                );
            }
        }
    }
    format!("order {status:?}")
}

/// The TLS-ALPN-01 certificate (RFC 8737 section 3): self-signed, for
/// `name` only, with the critical acmeIdentifier extension holding the
/// SHA-256 of the key authorization.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let key = rcgen::KeyPair::generate().map_err(|e| Failure(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| Failure(e.to_string()))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params
        .self_signed(&key)
        .map_err(|e| Failure(e.to_string()))?;
    Ok((cert.pem().into_bytes(), key.serialize_pem().into_bytes()))
}
