// Settings: hotkey, devices (with live meters and a mic test), tones, theme.

import type { Ctx, View } from "../context";
import { h, setText, uid } from "../dom";
import { formatHotkey, modifierNames } from "../format";
import {
  api,
  type AppState,
  type DeviceChoice,
  type DeviceInfo,
  type ErrorBody,
  type HotkeyInfo,
  type Settings,
  type Theme,
} from "../ipc";
import { createMeter, type Meter } from "../levels";
import { wireHold } from "../ptt";

/** `<option value>` for a device choice (`id:` prefixed: a device may be called "default"). */
export function choiceValue(choice: DeviceChoice): string {
  return choice === "default" ? "default" : `id:${choice.id}`;
}

export function valueChoice(value: string): DeviceChoice {
  return value.startsWith("id:") ? { id: value.slice(3) } : "default";
}

const THEMES: { value: Theme; label: string }[] = [
  { value: "system", label: "Match the system" },
  { value: "light", label: "Light" },
  { value: "dark", label: "Dark" },
];

export class SettingsView implements View {
  readonly el: HTMLElement;
  private draft: Settings | null = null;
  private saved: Settings | null = null;
  private devices: DeviceInfo[] = [];
  private capturing = false;
  private readonly hotkeyValue: HTMLElement;
  private readonly hotkeyState: HTMLElement;
  private readonly hotkeyButton: HTMLButtonElement;
  private readonly hotkeyConfigure: HTMLButtonElement;
  private readonly input: HTMLSelectElement;
  private readonly output: HTMLSelectElement;
  private readonly deviceError: HTMLElement;
  private readonly tones: HTMLInputElement;
  private readonly theme: HTMLSelectElement;
  private readonly save: HTMLButtonElement;
  private readonly saveError: HTMLElement;
  private readonly saveStatus: HTMLElement;
  private readonly micTest: HTMLButtonElement;
  private readonly micTestHelp: HTMLElement;
  private readonly meters: Meter[];
  private readonly disposers: (() => void)[] = [];
  private shownNow = false;

  constructor(private readonly ctx: Ctx) {
    const ids = {
      hotkey: uid("hotkey"),
      input: uid("input-device"),
      output: uid("output-device"),
      tones: uid("tones"),
      theme: uid("theme"),
      micHelp: uid("mic-help"),
    };

    this.hotkeyValue = h("kbd", { id: ids.hotkey, class: "kbd", "data-testid": "hotkey-value" });
    this.hotkeyState = h("p", { class: "muted small", "data-testid": "hotkey-state" });
    this.hotkeyButton = h(
      "button",
      {
        type: "button",
        class: "button",
        "data-testid": "hotkey-change",
        "aria-describedby": ids.hotkey,
        onclick: () => (this.capturing ? this.stopCapture() : this.startCapture()),
      },
      "Change",
    );
    // Where the desktop owns the key (the GlobalShortcuts portal): its own settings.
    this.hotkeyConfigure = h(
      "button",
      {
        type: "button",
        class: "button",
        "data-testid": "hotkey-configure",
        hidden: true,
        onclick: () => {
          void api.configureHotkey().then((r) => {
            if (r.status === "error") this.ctx.reportError(r.error);
          });
        },
      },
      "Desktop shortcut settings…",
    );

    this.input = h("select", { id: ids.input, class: "input", "data-testid": "input-device" });
    this.output = h("select", { id: ids.output, class: "input", "data-testid": "output-device" });
    this.input.addEventListener("change", () => this.edit({ input: valueChoice(this.input.value) }));
    this.output.addEventListener("change", () =>
      this.edit({ output: valueChoice(this.output.value) }),
    );
    this.deviceError = h("p", { class: "inline-error", role: "alert", hidden: true });

    const mic = createMeter("tx", "Microphone level", { testid: "settings-meter-tx" });
    const speaker = createMeter("rx", "Speaker level", { testid: "settings-meter-rx" });
    this.meters = [mic, speaker];

    this.micTestHelp = h(
      "p",
      { id: ids.micHelp, class: "muted small" },
      "Speak while holding. When you let go, the echo channel plays it back so you can hear yourself.",
    );
    this.micTest = h(
      "button",
      {
        type: "button",
        class: "button hold",
        "data-testid": "mic-test",
        "aria-describedby": ids.micHelp,
      },
      "Hold to test your microphone",
    );
    const micWire = wireHold(this.micTest, {
      keys: true,
      down: () => this.setMicTest(true),
      up: () => this.setMicTest(false),
      onChange: (pressed) => {
        this.micTest.classList.toggle("pressed", pressed);
        setText(
          this.micTest,
          pressed ? "Recording… release to hear it back" : "Hold to test your microphone",
        );
      },
    });
    this.disposers.push(micWire.dispose);
    this.disposers.push(() => micWire.hold.release());

    this.tones = h("input", { id: ids.tones, type: "checkbox", "data-testid": "tones" });
    this.tones.addEventListener("change", () => this.edit({ tones: this.tones.checked }));

    this.theme = h("select", { id: ids.theme, class: "input", "data-testid": "theme" });
    for (const t of THEMES) this.theme.append(h("option", { value: t.value }, t.label));
    this.theme.addEventListener("change", () => {
      const theme = this.theme.value as Theme;
      this.edit({ theme });
      this.ctx.applyTheme(theme); // preview; reverted if not saved
    });

    this.save = h(
      "button",
      { type: "submit", class: "button primary", "data-testid": "settings-save" },
      "Save",
    );
    this.saveError = h("div", {
      class: "inline-error",
      role: "alert",
      "data-testid": "settings-error",
      hidden: true,
    });
    this.saveStatus = h("span", { class: "muted small", role: "status", "aria-live": "polite" });

    const form = h(
      "form",
      { class: "form", novalidate: true, "aria-label": "Settings" },
      h("h2", null, "Settings"),
      h(
        "fieldset",
        { class: "group" },
        h("legend", null, "Push-to-talk key"),
        h("div", { class: "row" }, this.hotkeyValue, this.hotkeyButton, this.hotkeyConfigure),
        this.hotkeyState,
      ),
      h(
        "fieldset",
        { class: "group" },
        h("legend", null, "Audio"),
        h(
          "div",
          { class: "field" },
          h("label", { for: ids.input }, "Microphone"),
          this.input,
          h("div", { class: "meter-row" }, mic.el),
        ),
        h(
          "div",
          { class: "field" },
          h("label", { for: ids.output }, "Speaker"),
          this.output,
          h("div", { class: "meter-row" }, speaker.el),
        ),
        this.deviceError,
        h("div", { class: "field" }, this.micTest, this.micTestHelp),
        h(
          "div",
          { class: "check" },
          this.tones,
          h("label", { for: ids.tones }, "Play a tone when talking starts and ends"),
        ),
      ),
      h(
        "fieldset",
        { class: "group" },
        h("legend", null, "Appearance"),
        h("div", { class: "field" }, h("label", { for: ids.theme }, "Theme"), this.theme),
      ),
      this.saveError,
      h("div", { class: "form-actions" }, this.save, this.saveStatus),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.submit();
    });
    this.el = h("section", { class: "view view-settings" }, form);
    this.paint();
  }

  update(state: AppState): void {
    this.micTest.classList.toggle("active", state.mic_test);
  }

  show(): void {
    this.shownNow = true;
    for (const m of this.meters) this.ctx.levels.add(m);
    void api.setMeter(true).then((r) => {
      if (r.status === "error") this.showDeviceError(r.error);
    });
    this.showSaveError(null);
    setText(this.saveStatus, "");
    const cached = this.ctx.settings();
    if (cached) this.load(cached);
    void api.getSettings().then((r) => {
      if (r.status === "ok" && this.shownNow) this.load(r.data);
    });
    void this.ctx.refreshHotkey().then(() => this.paintHotkeyState());
    void this.loadDevices();
  }

  hide(): void {
    this.shownNow = false;
    this.stopCapture();
    for (const m of this.meters) this.ctx.levels.remove(m);
    void api.setMeter(false);
    // An unsaved theme preview goes back to the saved theme.
    const saved = this.saved ?? this.ctx.settings();
    if (saved) this.ctx.applyTheme(saved.theme);
  }

  dispose(): void {
    this.stopCapture();
    for (const d of this.disposers) d();
    for (const m of this.meters) this.ctx.levels.remove(m);
  }

  private load(settings: Settings): void {
    this.saved = settings;
    this.draft = { ...settings };
    this.paint();
  }

  private edit(patch: Partial<Settings>): void {
    if (!this.draft) return;
    this.draft = { ...this.draft, ...patch };
    setText(this.saveStatus, "");
    this.paint();
  }

  private async loadDevices(): Promise<void> {
    const r = await api.listDevices();
    if (r.status === "error") {
      this.devices = [];
      this.showDeviceError(r.error);
    } else {
      this.devices = r.data;
      this.showDeviceError(null);
    }
    this.paint();
  }

  private showDeviceError(error: ErrorBody | null): void {
    this.deviceError.hidden = error === null;
    this.deviceError.textContent = error ? `${error.message} (${error.code})` : "";
  }

  private paint(): void {
    const d = this.draft;
    this.paintDevices(this.input, "input", d ? d.input : "default");
    this.paintDevices(this.output, "output", d ? d.output : "default");
    if (!this.capturing) setText(this.hotkeyValue, d ? d.hotkey : "");
    this.tones.checked = d ? d.tones : true;
    this.theme.value = d ? d.theme : "system";
    const disabled = d === null;
    for (const el of [this.input, this.output, this.tones, this.theme, this.save, this.hotkeyButton]) {
      el.disabled = disabled;
    }
    this.paintHotkeyState();
  }

  private paintDevices(select: HTMLSelectElement, direction: "input" | "output", choice: DeviceChoice): void {
    const options: { value: string; label: string }[] = [
      { value: "default", label: "System default" },
    ];
    for (const dev of this.devices) {
      if (dev.direction !== direction) continue;
      options.push({
        value: choiceValue({ id: dev.id }),
        label: dev.is_default ? `${dev.name} (default)` : dev.name,
      });
    }
    const current = choiceValue(choice);
    if (!options.some((o) => o.value === current) && choice !== "default") {
      options.push({ value: current, label: `${choice.id} (not connected)` });
    }
    const same =
      select.options.length === options.length &&
      options.every((o, i) => select.options[i]!.value === o.value && select.options[i]!.text === o.label);
    if (!same) {
      select.replaceChildren(...options.map((o) => h("option", { value: o.value }, o.label)));
    }
    select.value = current;
  }

  /** The hotkey changed outside this view (the desktop assigned or changed it). */
  hotkeyChanged(): void {
    this.paintHotkeyState();
  }

  private paintHotkeyState(): void {
    if (this.capturing) return;
    const info = this.ctx.hotkey();
    const d = this.draft;
    this.hotkeyConfigure.hidden = !info?.configurable;
    setText(this.hotkeyState, hotkeyStateText(info, d?.hotkey ?? null));
  }

  private setMicTest(on: boolean): void {
    void api.micTest(on).then((r) => {
      if (r.status === "error") this.ctx.reportError(r.error);
    });
  }

  // --- hotkey capture ---

  private readonly onCaptureKey = (e: KeyboardEvent): void => {
    e.preventDefault();
    e.stopImmediatePropagation();
    if (e.type === "keyup") return;
    if (e.key === "Escape" && !e.ctrlKey && !e.altKey && !e.shiftKey && !e.metaKey) {
      this.stopCapture();
      return;
    }
    const combo = formatHotkey(e);
    if (combo === null) {
      const mods = modifierNames(e);
      setText(this.hotkeyValue, mods.length ? `${mods.join("+")}+…` : "…");
      return;
    }
    this.stopCapture();
    this.edit({ hotkey: combo });
  };

  private readonly onCaptureBlur = (): void => this.stopCapture();

  private startCapture(): void {
    if (this.capturing || !this.draft) return;
    this.capturing = true;
    this.ctx.setKeyboardCaptured(true);
    this.hotkeyButton.classList.add("capturing");
    this.hotkeyButton.setAttribute("aria-pressed", "true");
    setText(this.hotkeyButton, "Cancel");
    setText(this.hotkeyValue, "…");
    setText(this.hotkeyState, "Press the new key combination. Escape cancels.");
    this.ctx.win.addEventListener("keydown", this.onCaptureKey, true);
    this.ctx.win.addEventListener("keyup", this.onCaptureKey, true);
    this.ctx.win.addEventListener("blur", this.onCaptureBlur);
  }

  private stopCapture(): void {
    if (!this.capturing) return;
    this.capturing = false;
    this.ctx.setKeyboardCaptured(false);
    this.ctx.win.removeEventListener("keydown", this.onCaptureKey, true);
    this.ctx.win.removeEventListener("keyup", this.onCaptureKey, true);
    this.ctx.win.removeEventListener("blur", this.onCaptureBlur);
    this.hotkeyButton.classList.remove("capturing");
    this.hotkeyButton.removeAttribute("aria-pressed");
    setText(this.hotkeyButton, "Change");
    this.paint();
  }

  // --- save ---

  private showSaveError(error: ErrorBody | null): void {
    if (!error) {
      this.saveError.hidden = true;
      this.saveError.replaceChildren();
      return;
    }
    this.saveError.replaceChildren(
      h("span", { class: "inline-error-message" }, error.message),
      " ",
      h("code", { class: "mono code-chip" }, error.code),
    );
    this.saveError.hidden = false;
  }

  private async submit(): Promise<void> {
    if (!this.draft) return;
    this.stopCapture();
    const settings = { ...this.draft };
    this.save.disabled = true;
    setText(this.saveStatus, "Saving…");
    const r = await api.saveSettings(settings);
    this.save.disabled = false;
    if (r.status === "error") {
      setText(this.saveStatus, "");
      this.showSaveError(r.error);
      return;
    }
    this.showSaveError(null);
    this.saved = settings;
    this.ctx.setSettings(settings);
    this.ctx.applyTheme(settings.theme);
    setText(this.saveStatus, "Saved.");
    await this.ctx.refreshHotkey();
    this.paintHotkeyState();
  }
}

/** What Settings says about the push-to-talk key (`draftKey`: the key being edited). */
export function hotkeyStateText(info: HotkeyInfo | null, draftKey: string | null): string {
  const space = "Space works while this window is focused.";
  if (info && draftKey !== null && info.key !== draftKey) return "Save to start using this key.";
  if (!info) return `Hold it anywhere, even when Roger is in the background. ${space}`;
  if (info.source === "portal" && info.registered) {
    const trigger = info.trigger || info.key;
    const asked = trigger === info.key ? "" : ` (you asked for ${info.key}; the desktop decides)`;
    return `The desktop gave "Push to talk" ${trigger}${asked}: hold it anywhere, even when Roger is in the background. ${space}`;
  }
  if (info.source === "portal" && !info.error) return "Asking the desktop for a global talk key…";
  if (!info.registered) {
    return `${info.key} does not work outside this window${info.error ? `: ${info.error}` : ""}. ${space}`;
  }
  return `Hold it anywhere, even when Roger is in the background. ${space}`;
}
