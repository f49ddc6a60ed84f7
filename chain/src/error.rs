//! Typed errors of the chain client.

use std::time::Duration;

/// What went wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// No connection could be opened.
    #[error("cannot reach the chain at {url}: {reason}")]
    Connect {
        /// The RPC URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The chain ran the call and a pallet refused it, e.g. `Network.MinStakeNotReached`.
    #[error("the chain refused the call: {pallet}.{error}{}", docs_suffix(.docs))]
    Module {
        /// The pallet, e.g. `Network`.
        pallet: String,
        /// The pallet's error, e.g. `PeerIdExist`.
        error: String,
        /// What the pallet says the error means.
        docs: String,
    },
    /// The chain ran the call and it failed outside a pallet (bad origin, token, arithmetic…).
    #[error("the call failed on chain: {0}")]
    Dispatch(String),
    /// The transaction pool refused the transaction (e.g. it cannot pay its fee).
    #[error("the chain rejected the transaction: {0}")]
    Rejected(String),
    /// The transaction was not in a finalized block in time.
    #[error("{what} did not complete within {after:?}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// Asked for something the chain does not hold.
    #[error("{0}")]
    NotFound(String),
    /// This client's typed API does not match the node's runtime.
    #[error("this client was generated for another runtime: {0} (regenerate with scripts/update-chain-metadata.sh)")]
    IncompatibleRuntime(String),
    /// Anything else from the RPC layer.
    #[error("chain RPC error: {0}")]
    Rpc(String),
}

fn docs_suffix(docs: &str) -> String {
    if docs.is_empty() {
        String::new()
    } else {
        format!(" ({docs})")
    }
}

impl ChainError {
    /// The pallet error's name when the chain refused the call in a pallet.
    pub fn module_error(&self) -> Option<(&str, &str)> {
        match self {
            ChainError::Module { pallet, error, .. } => Some((pallet, error)),
            _ => None,
        }
    }

    /// Turn any subxt error into a typed one, decoding module errors by name.
    pub(crate) fn from_subxt(error: subxt::Error) -> Self {
        use subxt::error::{
            DispatchError, TransactionEventsError, TransactionFinalizedSuccessError,
        };
        let text = error.to_string();
        match error {
            subxt::Error::TransactionFinalizedSuccessError(
                TransactionFinalizedSuccessError::SuccessError(
                    TransactionEventsError::ExtrinsicFailed(dispatch),
                ),
            )
            | subxt::Error::TransactionEventsError(TransactionEventsError::ExtrinsicFailed(
                dispatch,
            )) => match dispatch {
                DispatchError::Module(module) => match module.details() {
                    Ok(details) => ChainError::Module {
                        pallet: details.pallet.name().to_owned(),
                        error: details.variant.name.clone(),
                        docs: details.variant.docs.join(" ").trim().to_owned(),
                    },
                    Err(_) => ChainError::Dispatch(module.details_string()),
                },
                other => ChainError::Dispatch(other.to_string()),
            },
            subxt::Error::TransactionFinalizedSuccessError(
                TransactionFinalizedSuccessError::FinalizationError(e),
            ) => ChainError::Rejected(e.to_string()),
            subxt::Error::TransactionProgressError(e) => ChainError::Rejected(e.to_string()),
            subxt::Error::TransactionStatusError(e) => ChainError::Rejected(e.to_string()),
            subxt::Error::ExtrinsicError(_) if text.contains("Invalid Transaction") => {
                ChainError::Rejected(text)
            }
            _ if text.contains("ncompatible") || text.contains("codegen") => {
                ChainError::IncompatibleRuntime(text)
            }
            _ => ChainError::Rpc(text),
        }
    }
}

/// `.map_err(sx)`: any subxt error into a [`ChainError`].
pub(crate) fn sx<E: Into<subxt::Error>>(error: E) -> ChainError {
    ChainError::from_subxt(error.into())
}
