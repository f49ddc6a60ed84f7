//! The dev chain spec.

use mesh_chain_runtime::WASM_BINARY;
use sc_service::{ChainType, Properties};

/// Chain specs of this node (no extensions).
pub(crate) type ChainSpec = sc_service::GenericChainSpec;

/// `sp_genesis_builder::DEV_RUNTIME_PRESET`: the runtime's dev preset.
const DEV_PRESET: &str = "development";

/// The dev chain spec: the runtime's dev preset (funded dev accounts, Alice sudo).
pub(crate) fn development_chain_spec() -> Result<ChainSpec, String> {
    let mut properties = Properties::new();
    properties.insert("tokenSymbol".into(), "MESH".into());
    properties.insert("tokenDecimals".into(), 18.into());
    properties.insert("ss58Format".into(), 42.into());
    let wasm =
        WASM_BINARY.ok_or("the node was built without its wasm runtime (SKIP_WASM_BUILD set?)")?;
    Ok(ChainSpec::builder(wasm, Default::default())
        .with_name("mesh dev")
        .with_id("mesh_dev")
        .with_chain_type(ChainType::Development)
        .with_genesis_config_preset_name(DEV_PRESET)
        .with_properties(properties)
        .build())
}
