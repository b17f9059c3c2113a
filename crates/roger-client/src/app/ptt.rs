//! Push-to-talk and the microphone: the press (floor request while the microphone
//! opens), the transmission, the release, the microphone test and the level meter.

use super::*;

/// How often the settings' level meter reports.
const METER_INTERVAL: Duration = Duration::from_millis(50);

/// A microphone still opening when the floor request goes out: its frames once it is
/// open (the capture ring keeps what came before the grant), none if it fails.
struct OpeningMic {
    opening: Option<tokio::sync::oneshot::Receiver<MicSource>>,
    source: Option<MicSource>,
}

#[async_trait::async_trait]
impl AudioSource for OpeningMic {
    async fn next_frame(&mut self) -> Option<Frame> {
        if self.source.is_none() {
            let opening = self.opening.take()?;
            self.source = Some(opening.await.ok()?);
        }
        self.source.as_mut()?.next_frame().await
    }
}

impl App {
    /// PTT pressed (hotkey, button or Space). The press is taken when this is called,
    /// before the future runs, so a release that follows at once is never overtaken.
    /// Repeats while held are ignored, and a key held past the max talk time sends
    /// nothing more until it is released.
    pub fn ptt_down(&self) -> impl Future<Output = Result<(), ErrorBody>> + Send + 'static {
        let (pressed, channel) = {
            let mut view = lock(&self.inner.view);
            (view.press(), view.state().channel.clone())
        };
        if pressed {
            self.emit_state();
        }
        let app = self.clone();
        async move {
            if !pressed {
                return Ok(());
            }
            let Some(channel) = channel else {
                let e = ErrorBody::new(ErrorCode::NotInChannel, "join a channel first");
                app.press_failed(&e, false);
                return Err(e);
            };
            app.transmit(channel).await
        }
    }

    /// After a press: opens the microphone and asks for the floor.
    async fn transmit(&self, channel: ChannelId) -> Result<(), ErrorBody> {
        let _one = self.inner.ptt_lock.lock().await;
        if !lock(&self.inner.view).held() {
            return Ok(()); // released while an earlier operation ran
        }
        if lock(&self.inner.mic).is_some() {
            // Press, release, press before the first press ran: that one transmits.
            return Ok(());
        }
        let Some(manager) = self.manager() else {
            let e = not_connected();
            self.press_failed(&e, false);
            return Err(e);
        };
        let (input, events) = (self.settings().input, self.device_events());
        // The floor request goes out at once while the microphone opens (15-20 ms with
        // PulseAudio): the grant, and its talk-permit tone, do not wait for the device.
        // Opening blocks (up to 5 s when it hangs): off the async threads.
        let (source_tx, source_rx) = tokio::sync::oneshot::channel();
        let open = async move {
            let opened = tokio::task::spawn_blocking(move || Microphone::open(input, events))
                .await
                .unwrap_or_else(|e| {
                    Err(ErrorBody::new(
                        ErrorCode::MediaDeviceError,
                        format!("the microphone could not be opened: {e}"),
                    ))
                });
            if let Ok(mic) = &opened {
                let _ = source_tx.send(mic.source());
            }
            opened
        };
        let source = OpeningMic {
            opening: Some(source_rx),
            source: None,
        };
        let (opened, outcome) = tokio::join!(open, manager.ptt_down(&channel, Box::new(source)));
        let mic = match opened {
            Ok(m) => m,
            Err(e) => {
                // The source ended without a frame, which releases a granted floor; this
                // makes sure of it.
                if matches!(outcome, Ok(FloorOutcome::Granted { .. })) {
                    let _ = manager.ptt_up().await;
                }
                self.press_failed(&e, true);
                return Err(e);
            }
        };
        match outcome {
            Ok(FloorOutcome::Granted { expires_in }) => {
                let held = {
                    let mut view = lock(&self.inner.view);
                    view.granted(unix_ms() + expires_in.as_millis() as u64);
                    view.held()
                };
                if held {
                    *lock(&self.inner.mic) = Some(mic);
                } else {
                    let _ = manager.ptt_up().await;
                    self.inner.close_mic(mic);
                }
            }
            Ok(FloorOutcome::Denied { holder }) => {
                self.inner.close_mic(mic);
                lock(&self.inner.view).denied(&holder);
            }
            Err(e) => {
                self.inner.close_mic(mic);
                self.press_failed(&e, false);
                return Err(e);
            }
        }
        self.emit_state();
        Ok(())
    }

    fn press_failed(&self, error: &ErrorBody, banner: bool) {
        {
            let mut view = lock(&self.inner.view);
            view.release();
            view.state_mut().mic_test = false;
            if banner {
                view.state_mut().error = Some(AppError::from_body(error));
            }
        }
        if !banner {
            (self.inner.emit)(AppEvent::Notice(Notice::TalkEnded {
                message: format!("{} ({})", error.code.user_message(), error.message),
            }));
        }
        self.emit_state();
    }

    /// PTT released: stops sending and releases the floor. Like [`App::ptt_down`], the
    /// release is taken when this is called.
    pub fn ptt_up(&self) -> impl Future<Output = ()> + Send + 'static {
        let was_held = {
            let mut view = lock(&self.inner.view);
            let held = view.held();
            view.release();
            held
        };
        if was_held {
            self.emit_state();
        }
        let app = self.clone();
        async move { app.stop_transmitting(was_held).await }
    }

    async fn stop_transmitting(&self, was_held: bool) {
        let _one = self.inner.ptt_lock.lock().await;
        if lock(&self.inner.view).held() {
            return; // pressed again meanwhile
        }
        if let Some(m) = self.manager() {
            if m.talking_in().is_some() {
                if let Err(e) = m.ptt_up().await {
                    tracing::debug!(error = %e, "floor release");
                }
            }
        }
        if let Some(mic) = lock(&self.inner.mic).take() {
            self.inner.close_mic(mic);
        }
        let test_ended = {
            let mut view = lock(&self.inner.view);
            std::mem::replace(&mut view.state_mut().mic_test, false)
        };
        if test_ended || was_held {
            self.emit_state();
        }
    }

    /// The microphone test: while on, talks to the echo channel, which plays the
    /// transmission back when it is turned off. Like [`App::ptt_down`], the press (or
    /// release) is taken when this is called.
    pub fn mic_test(
        &self,
        on: bool,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send + 'static {
        let release = (!on).then(|| self.ptt_up());
        let pressed = on && {
            let mut view = lock(&self.inner.view);
            let pressed = view.press();
            if pressed {
                view.state_mut().mic_test = true;
            }
            pressed
        };
        if pressed {
            self.emit_state();
        }
        let app = self.clone();
        async move {
            if let Some(release) = release {
                release.await;
                return Ok(());
            }
            if !pressed {
                return Ok(());
            }
            let echo = ChannelId(ECHO_CHANNEL.into());
            if let Err(e) = app.join_echo(&echo).await {
                app.press_failed(&e, false);
                return Err(e);
            }
            app.transmit(echo).await
        }
    }

    /// Joins the echo channel for the microphone test (refused if the server has none
    /// for this user).
    async fn join_echo(&self, echo: &ChannelId) -> Result<(), ErrorBody> {
        let manager = self.manager().ok_or_else(not_connected)?;
        let allowed = manager
            .welcome()
            .is_some_and(|w| w.channels.iter().any(|c| &c.id == echo));
        if !allowed {
            return Err(ErrorBody::new(
                ErrorCode::ChannelNotAllowed,
                "this server has no echo channel for you, so there is no microphone test",
            ));
        }
        let current = lock(&self.inner.view).state().channel.clone();
        if current.as_ref() != Some(echo) {
            manager.join(echo).await?;
        }
        Ok(())
    }

    /// Starts or stops the settings' level meter (microphone and speaker levels as
    /// [`AppEvent::Level`], 20 times a second).
    pub fn meter(&self, on: bool) -> Result<(), ErrorBody> {
        if let Some((mic, task)) = lock(&self.inner.meter).take() {
            task.abort();
            mic.stop();
        }
        if !on {
            return Ok(());
        }
        let mic = Microphone::open(self.settings().input, self.device_events())?;
        let weak = Arc::downgrade(&self.inner);
        let levels = mic.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(METER_INTERVAL);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let (rms, peak) = levels.level();
                (inner.emit)(AppEvent::Level {
                    direction: AudioDirection::Tx,
                    rms,
                    peak,
                });
                let out = lock(&inner.speaker).as_ref().map(|s| s.level());
                if let Some((rms, peak)) = out {
                    (inner.emit)(AppEvent::Level {
                        direction: AudioDirection::Rx,
                        rms,
                        peak,
                    });
                }
            }
        });
        *lock(&self.inner.meter) = Some((mic, task));
        Ok(())
    }
}
