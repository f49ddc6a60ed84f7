//! The consensus loop of two validator nodes against the real dev chain: the
//! elected one proposes, the other attests, once each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_chain::devnode::{register_dev_node, DevNode, DevNodeOptions};
use mesh_chain::{ChainClient, HotkeyChain, SignerSource};
use mesh_core::consensus::Score;
use mesh_core::{NodeClass, PeerId};
use mesh_server::consensus::{ConsensusLoop, ScoreFn};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elected_validator_proposes_and_the_other_attests() {
    let options = DevNodeOptions {
        block_millis: 300,
        ..Default::default()
    };
    let chain = DevNode::start_with(options)
        .expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let key = |uri: &str| SignerSource::Phrase(uri.into()).keypair().unwrap();
    let alice = key("//Alice");
    let subnet = client
        .create_subnet(&alice, "consensus", true)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for hotkey in ["//Bob", "//Charlie"] {
        let id = register_dev_node(&client, &alice, subnet, &key(hotkey), PeerId::random())
            .await
            .unwrap();
        client.activate_node(&alice, subnet, id).await.unwrap();
        ids.push(id);
    }

    // Both nodes score the same way (as honest nodes reading the same heartbeats would).
    let all = ids.clone();
    let score: ScoreFn = Arc::new(move |_epoch| {
        let all = all.clone();
        Box::pin(async move {
            all.iter()
                .map(|&node_id| Score {
                    node_id,
                    score: 1_000,
                })
                .collect()
        })
    });
    let cancel = CancellationToken::new();
    for hotkey in ["//Bob", "//Charlie"] {
        let chain = Arc::new(HotkeyChain::new(client.clone(), key(hotkey)));
        // The dev chain's 10-block epochs leave 1.5 blocks at the usual 15 %:
        // half an epoch here.
        let consensus = ConsensusLoop::new(chain, subnet, score.clone()).with_attest_window(0.5);
        tokio::spawn(consensus.run(Duration::from_millis(100), cancel.clone()));
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    let (epoch, proposer) = loop {
        assert!(Instant::now() < deadline, "no attested submission in time");
        let info = client.epoch_info(subnet).await.unwrap();
        let mut found = None;
        for epoch in info.epoch.saturating_sub(2)..=info.epoch {
            if let Some((proposer, attests)) =
                client.consensus_submission(subnet, epoch).await.unwrap()
            {
                if attests == 2 {
                    found = Some((epoch, proposer));
                }
            }
        }
        if let Some(found) = found {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        client.elected_validator(subnet, epoch).await.unwrap(),
        Some(proposer)
    );
    for id in &ids {
        let node = client.subnet_node(subnet, *id).await.unwrap().unwrap();
        assert_eq!(node.class, NodeClass::Validator);
    }
    // Never twice: a later look at the same epoch still shows two attestations.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        client.consensus_submission(subnet, epoch).await.unwrap(),
        Some((proposer, 2))
    );
    cancel.cancel();
}
