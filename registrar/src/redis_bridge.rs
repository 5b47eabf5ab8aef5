//! How the data layout's script calls ([`crate::redis_data`]) travel as the HA client's writes
//! ([`crate::ha`]): the client knows scripts only by index into its configuration, so the
//! configuration lists the layout's scripts in a fixed order and a call names its script by
//! that index.

use std::sync::Arc;

use crate::ha::{Script as HaScript, ScriptId, Write};
use crate::redis_data::{LOOKUP_SCRIPT, REGISTER_SCRIPT, Script, ScriptCall};

/// The layout's scripts, in the order [`ha_scripts`] lists them.
const SCRIPTS: [&Script; 2] = [&REGISTER_SCRIPT, &LOOKUP_SCRIPT];

/// The scripts for [`crate::ha::HaConfig::scripts`]: every new master connection loads them.
pub fn ha_scripts() -> Vec<HaScript> {
    SCRIPTS
        .iter()
        .map(|s| HaScript {
            sha1: Arc::from(s.sha1),
            source: Arc::from(s.source),
        })
        .collect()
}

/// The write that runs `call` (its script named by its index in [`ha_scripts`]); `None` for a
/// script that is not one of the layout's.
pub fn to_write(call: ScriptCall) -> Option<Write> {
    let index = SCRIPTS.iter().position(|s| *s == call.script)?;
    Some(Write {
        script: ScriptId(u16::try_from(index).ok()?),
        keys: call.keys,
        args: call.args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Aor;

    #[test]
    fn calls_name_their_script_by_its_index() {
        let scripts = ha_scripts();
        let aor = Aor::parse("sip:alice@example.com").expect("aor");
        let write = to_write(crate::redis_data::lookup_call(&aor)).expect("a layout script");
        let script = &scripts[usize::from(write.script.0)];
        assert_eq!(&*script.sha1, LOOKUP_SCRIPT.sha1);
        assert_eq!(write.keys, [crate::redis_data::aor_key(&aor)]);
        assert_eq!(&*scripts[0].sha1, REGISTER_SCRIPT.sha1);
    }
}
