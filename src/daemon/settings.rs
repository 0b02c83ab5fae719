//! The settings room's glue: the access check it holds, and carrying out its
//! [`settings::Output::Apply`] on what only the wiring holds (the TCP access policy, the log
//! level and ring, the connection limits) before every room takes the new configuration
//! (`rooms_apply_config`, generated from the room list).

use super::*;
use crate::components::settings;

impl Daemon {
    /// The settings room's outputs: effects to the bus, a new configuration applied at once
    /// (before the answers that report it go out).
    pub(super) fn settings_outputs(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        out: Vec<settings::Output<listener::TcpAccess>>,
    ) {
        for output in out {
            match output {
                settings::Output::Effect(e) => self.effects.push(e),
                settings::Output::Apply { changed, access } => {
                    self.apply_live(cx, &changed, access)
                }
            }
        }
    }

    fn apply_live(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        changed: &[String],
        access: Option<listener::TcpAccess>,
    ) {
        // Token and allowed hosts apply to the next request.
        if let Some(access) = access {
            self.access = access;
        }
        let new = self.rooms.settings.config().clone();
        for key in changed {
            match key.as_str() {
                "daemon.log_level" => self.logging.set_level(level_of(&new)),
                "daemon.log_buffer_lines" => {
                    self.logging.ring.set_capacity(new.daemon.log_buffer_lines)
                }
                k if k.starts_with("http.") => self.server.policy = conn_policy(&new),
                _ => {}
            }
        }
        self.rooms_apply_config(cx, &new);
    }

    /// Reloads the configuration file now (SIGHUP, `restart` of everything): the report, or
    /// why the running configuration stays.
    pub(super) fn config_reload(&mut self, cx: &mut Cx<'_, Timer>) -> Answer {
        self.with::<Settings<listener::TcpAccess>, _>(cx, |room, rcx| room.reload(rcx))
    }
}

/// The TCP access policy a config asks for; refused when the token (or its file) is
/// unusable, or when a generated token would guard a non-loopback listener. The settings
/// room holds it as its [`settings::AccessCheck`].
pub(super) fn access_for(
    bound: Option<std::net::SocketAddr>,
    state_dir: &Path,
    config: &Config,
) -> Result<listener::TcpAccess, ApiError> {
    let Some(bound) = bound else {
        return Ok(listener::TcpAccess::default());
    };
    let key = if config.security.api_token_file.is_empty() {
        "security.api_token"
    } else {
        "security.api_token_file"
    };
    let token = api_token(config, state_dir)
        .map_err(|m| ApiError::field(ErrorCode::ConfigInvalid, key, m))?;
    token_fits_listener(&token, bound)
        .map_err(|m| ApiError::field(ErrorCode::ConfigInvalid, "security.api_token", m))?;
    Ok(listener::TcpAccess::new(
        Some(token),
        bound,
        &config.http.allowed_hosts,
        &config.http.allowed_origins,
    ))
}
