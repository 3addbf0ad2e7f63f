//! The `[admin]` table: where the admin API listens and who may use it.

use super::*;

impl Reader<'_, '_, '_> {
    /// The `[admin]` table.
    pub(super) fn admin(&mut self, value: &Value<'_>) -> Option<RawAdmin> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong("admin", value, "a table, [admin]");
            return None;
        };
        let mut admin = RawAdmin {
            pos: self.pos(value),
            listen: None,
            mode: 0o600,
            owner: None,
            token_file: None,
        };
        for (key, v) in table.iter() {
            let name: &str = key.get_ref();
            match name {
                "listen" => {
                    let pos = self.pos(v);
                    admin.listen = self.address(v).map(|value| At { value, pos });
                }
                "mode" => {
                    let text = self.string(name, v, "an octal file mode like \"0600\"");
                    match text.map(listen::parse_mode) {
                        Some(Some(m)) => admin.mode = m,
                        Some(None) => self.wrong(name, v, "an octal file mode like \"0600\""),
                        None => {}
                    }
                }
                "owner" => admin.owner = self.name(name, v, "user"),
                "token_file" => admin.token_file = self.path(name, v),
                _ => {
                    let message = suggest::unknown_key(name, ADMIN_KEYS);
                    self.errs.at_span(&key.span(), message);
                }
            }
        }
        if admin.listen.is_none() && !table.contains_key("listen") {
            self.errs.at(
                admin.pos,
                "[admin] needs \"listen\", e.g. listen = \"unix:/run/baton/admin.sock\"",
            );
        }
        Some(admin)
    }
}
