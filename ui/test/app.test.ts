import { emit } from "@tauri-apps/api/event";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { AppError } from "../src/ipc";
import { flush, makeSettings, makeState, mount, NOW, unmountAll } from "./helpers";

afterEach(() => {
  unmountAll();
  vi.useRealTimers();
});

const unreachable: AppError = {
  code: "SIGNALING_UNREACHABLE",
  message: "Cannot reach the server. Check the address.",
  action: "rejoin",
  detail: "connect ws://10.0.0.1:7070/ws: connection refused (os error 111)",
};

describe("start", () => {
  it("reads state, settings and hotkey, and shows the talk view", async () => {
    const m = await mount();
    expect(m.cmds()).toEqual(expect.arrayContaining(["get_state", "get_settings", "get_hotkey"]));
    expect(m.$("status-dot").dataset.color).toBe("green");
    expect(m.$("status-text").textContent).toBe("Connected");
    expect(m.$("ptt").closest("section")!.hidden).toBe(false);
    expect(m.$("channel-general").getAttribute("aria-current")).toBe("true");
    expect(m.$("channel-ops").hasAttribute("aria-current")).toBe(false);
    expect(m.$("members").textContent).toContain("Alice (you)");
    expect(m.$("nav-main").getAttribute("aria-current")).toBe("page");
    expect(document.documentElement.dataset.theme).toBe("system");
  });

  it("applies the saved theme", async () => {
    await mount({ settings: makeSettings({ theme: "dark" }) });
    expect(document.documentElement.dataset.theme).toBe("dark");
  });
});

describe("status dot", () => {
  it("a state-changed event re-renders the dot and text", async () => {
    const m = await mount();
    expect(m.$("status-dot").getAttribute("data-color")).toBe("green");
    await emit("state-changed", makeState({ status: { status: "Reconnecting", attempt: 2, max: 5, retry_at_ms: NOW + 3000 } }));
    expect(m.$("status-dot").getAttribute("data-color")).toBe("amber");
    expect(m.$("status-text").textContent).toBe("Reconnecting (2/5), next try in 3 s");
    await emit("state-changed", makeState({ status: { status: "Failed", code: "SIGNALING_UNREACHABLE" }, error: unreachable }));
    expect(m.$("status-dot").getAttribute("data-color")).toBe("red");
    expect(m.$("status-text").textContent).toBe("Failed: Cannot reach the server. Check the address.");
    await emit("state-changed", makeState({ status: { status: "Offline" }, signed_in: false }));
    expect(m.$("status-dot").getAttribute("data-color")).toBe("grey");
  });

  it("the reconnect countdown ticks every 250 ms", async () => {
    let now = NOW;
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const m = await mount({ now: () => now });
    await m.emitState(makeState({ status: { status: "Reconnecting", attempt: 2, max: 5, retry_at_ms: NOW + 3000 } }));
    const text = () => m.$("status-text").textContent;
    expect(text()).toBe("Reconnecting (2/5), next try in 3 s");
    now = NOW + 1100;
    vi.advanceTimersByTime(250);
    expect(text()).toBe("Reconnecting (2/5), next try in 2 s");
    now = NOW + 3000;
    vi.advanceTimersByTime(250);
    expect(text()).toBe("Reconnecting (2/5), next try now");
    // Connected again: the clock stops.
    await m.emitState(makeState());
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("error banner", () => {
  it("shows the message and code, details, and Rejoin calls rejoin", async () => {
    const m = await mount({ state: makeState({ error: unreachable }) });
    const banner = m.$("banner");
    expect(banner.hidden).toBe(false);
    expect(banner.getAttribute("role")).toBe("alert");
    expect(m.$("banner-code").textContent).toBe("SIGNALING_UNREACHABLE");
    expect(m.$("banner-message").textContent).toBe(unreachable.message);
    expect(banner.querySelector("details")!.textContent).toContain("connection refused");
    m.$("rejoin").click();
    await flush();
    expect(m.cmds()).toContain("rejoin");
  });

  it("retry_later also offers Rejoin", async () => {
    const m = await mount({ state: makeState({ error: { ...unreachable, code: "SERVER_FULL", action: "retry_later" } }) });
    expect(m.q("rejoin")).not.toBeNull();
  });

  it("action sign_in shows Sign in (not Rejoin), which opens the sign-in view", async () => {
    const m = await mount({
      state: makeState({
        error: { code: "TOKEN_EXPIRED", message: "Your sign-in has expired. Sign in again.", action: "sign_in", detail: "" },
      }),
    });
    expect(m.q("rejoin")).toBeNull();
    const signIn = m.$("banner-sign-in");
    expect(signIn.textContent).toBe("Sign in");
    expect(m.$("banner").querySelector("details")).toBeNull();
    signIn.click();
    expect(m.app.shown()).toBe("signin");
    expect(m.$("server-url").closest("section")!.hidden).toBe(false);
  });

  it("pick_device opens settings; none and update offer no action", async () => {
    const m = await mount({
      state: makeState({ error: { code: "MEDIA_DEVICE_ERROR", message: "Mic gone", action: "pick_device", detail: "" } }),
    });
    m.$("banner-settings").click();
    expect(m.app.shown()).toBe("settings");
    for (const action of ["none", "update"] as const) {
      await m.emitState(makeState({ error: { code: "UNSUPPORTED_PROTOCOL_VERSION", message: `m-${action}`, action, detail: "" } }));
      expect(m.$("banner-message").textContent).toBe(`m-${action}`);
      expect(m.$("banner").querySelectorAll(".banner-actions .button")).toHaveLength(0);
    }
  });

  it("dismiss calls dismiss_error and hides; a cleared error hides it", async () => {
    const m = await mount({ state: makeState({ error: unreachable }) });
    m.$("banner-dismiss").click();
    await flush();
    expect(m.cmds()).toContain("dismiss_error");
    expect(m.$("banner").hidden).toBe(true);
    await m.emitState(makeState({ error: unreachable }));
    expect(m.$("banner").hidden).toBe(true); // same error, still dismissed
    await m.emitState(makeState({ error: null }));
    await m.emitState(makeState({ error: unreachable }));
    expect(m.$("banner").hidden).toBe(false); // it came back
  });

  it("keeps the details open across unrelated re-renders", async () => {
    const m = await mount({ state: makeState({ error: unreachable }) });
    const details = m.$("banner").querySelector("details")!;
    details.open = true;
    await m.emitState(makeState({ error: unreachable, ptt: { state: "listening", name: "Bob" } }));
    expect(m.$("banner").querySelector("details")!.open).toBe(true);
  });
});

describe("toast", () => {
  it("a recovered notice shows 'Reconnected in 0.8 s' and hides after ~4 s", async () => {
    const m = await mount();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    await emit("notice-shown", { kind: "recovered", ms: 812 });
    const toast = m.$("toast");
    expect(toast.textContent).toBe("Reconnected in 0.8 s");
    expect(toast.getAttribute("role")).toBe("status");
    expect(toast.dataset.visible).toBe("true");
    vi.advanceTimersByTime(4100);
    expect(toast.dataset.visible).toBe("false");
  });

  it("talk_ended shows its message", async () => {
    const m = await mount();
    await emit("notice-shown", { kind: "talk_ended", message: "Talk time is up (60 s)." });
    expect(m.$("toast").textContent).toBe("Talk time is up (60 s).");
  });
});

describe("sign in", () => {
  it("is shown when signed out, prefilled, and Connect calls sign_in", async () => {
    const m = await mount({
      state: makeState({ signed_in: false, status: { status: "Offline" }, user: null, channels: [], channel: null, members: [] }),
    });
    expect(m.app.shown()).toBe("signin");
    expect(m.$("nav-signin").getAttribute("aria-current")).toBe("page");
    expect(m.$("nav-main").hasAttribute("aria-current")).toBe(false);
    expect(m.$("ptt").closest("section")!.hidden).toBe(true);
    const url = m.$("server-url") as HTMLInputElement;
    const token = m.$("token") as HTMLInputElement;
    expect(url.placeholder).toBe("ws://127.0.0.1:7070/ws");
    expect(url.value).toBe("ws://127.0.0.1:7070/ws");
    expect(token.type).toBe("password");
    // The token is never sent to the window: nothing to prefill.
    expect(token.value).toBe("");
    url.value = "ws://example.test/ws";
    token.value = "secret-token";
    m.$("connect").click();
    await flush();
    const call = m.calls.find((c) => c.cmd === "sign_in");
    expect(call?.args).toEqual({
      serverUrl: "ws://example.test/ws",
      token: "secret-token",
      allowUnencrypted: false,
    });
    // Sent once, then gone from the form.
    expect(token.value).toBe("");
  });

  it("says where a saved token is kept, offers Sign out, and marks unencrypted as such", async () => {
    const m = await mount({
      state: makeState({ signed_in: true, token_store: "keyring" }),
    });
    m.app.navigate("signin");
    await flush();
    expect(m.$("token-store").hidden).toBe(false);
    expect(m.$("token-store").textContent).toContain("system keyring");
    const box = m.$("allow-unencrypted") as HTMLInputElement;
    expect(box.checked).toBe(false);
    const label = m.root.querySelector(`label[for="${box.id}"]`)!;
    expect(label.textContent).toContain("unencrypted");
    expect(label.textContent).toContain("in the clear");
    box.checked = true;
    (m.$("token") as HTMLInputElement).value = "t";
    (m.$("server-url") as HTMLInputElement).value = "ws://198.18.0.9:7070/ws";
    m.$("connect").click();
    await flush();
    expect(m.calls.find((c) => c.cmd === "sign_in")?.args).toMatchObject({ allowUnencrypted: true });
    m.app.navigate("signin");
    await flush();
    m.$("sign-out").click();
    await flush();
    expect(m.calls.some((c) => c.cmd === "sign_out")).toBe(true);
  });

  it("shows the error's message and code inline on failure", async () => {
    const m = await mount({
      state: makeState({ signed_in: false, status: { status: "Offline" } }),
      handlers: {
        sign_in: () => {
          throw { code: "TOKEN_INVALID", message: "Your sign-in was not accepted. Check the token." };
        },
      },
    });
    (m.$("token") as HTMLInputElement).value = "not-a-token";
    m.$("connect").click();
    await flush();
    const err = m.$("signin-error");
    expect(err.hidden).toBe(false);
    expect(err.getAttribute("role")).toBe("alert");
    expect(err.textContent).toContain("Your sign-in was not accepted. Check the token.");
    expect(err.textContent).toContain("TOKEN_INVALID");
    expect(m.app.shown()).toBe("signin");
  });

  it("offers Disconnect when signed in", async () => {
    const m = await mount();
    m.$("nav-signin").click();
    expect(m.$("nav-signin").textContent).toBe("Account");
    m.$("disconnect").click();
    await flush();
    expect(m.cmds()).toContain("disconnect");
  });
});

describe("channels", () => {
  it("click joins, showing the failure inline", async () => {
    const m = await mount({
      handlers: {
        join_channel: () => {
          throw { code: "CHANNEL_NOT_ALLOWED", message: "You are not allowed in that channel." };
        },
      },
    });
    m.$("channel-ops").click();
    await flush();
    const call = m.calls.find((c) => c.cmd === "join_channel");
    expect(call?.args).toEqual({ channel: "ops" });
    expect(m.root.textContent).toContain("You are not allowed in that channel. (CHANNEL_NOT_ALLOWED)");
  });

  it("keeps the channel elements (and focus) across re-renders and marks the talker", async () => {
    const m = await mount();
    const ops = m.$("channel-ops");
    ops.focus();
    await m.emitState(makeState({ channel: "ops", talker: { user: "u-bob", name: "Bob" }, ptt: { state: "listening", name: "Bob" } }));
    expect(m.$("channel-ops")).toBe(ops);
    expect(document.activeElement).toBe(ops);
    expect(ops.getAttribute("aria-current")).toBe("true");
    const bob = m.$("members").querySelector('[data-user="u-bob"]')!;
    expect(bob.classList.contains("talking")).toBe(true);
    expect(m.$("members").querySelector('[data-user="u-alice"]')!.classList.contains("talking")).toBe(false);
  });
});

describe("settings", () => {
  it("says plainly when this desktop gives no global key, in Settings and under the button", async () => {
    const why =
      "this desktop gives apps no global talk key. Hold the on-screen button, or Space while Roger's window is focused (the desktop portal has no GlobalShortcuts interface)";
    const m = await mount({
      hotkey: { key: "F8", registered: false, error: why, source: "none", trigger: null, configurable: false },
    });
    expect(m.$("ptt").textContent).toContain("or hold Space in this window");
    expect(m.$("ptt").textContent).toContain("no global talk key");
    expect(m.$("ptt").textContent).not.toContain("F8");
    m.$("nav-settings").click();
    await flush();
    const state = m.$("hotkey-state").textContent ?? "";
    expect(state).toContain("F8 does not work outside this window");
    expect(state).toContain("no global talk key");
    expect(state).toContain("Space works while this window is focused");
    expect(m.$("hotkey-configure").hidden).toBe(true);
  });

  it("shows the trigger the desktop's portal assigned, follows its changes, and opens its settings", async () => {
    const m = await mount({
      hotkey: { key: "F8", registered: false, error: null, source: "portal", trigger: null, configurable: false },
    });
    m.$("nav-settings").click();
    await flush();
    expect(m.$("hotkey-state").textContent).toContain("Asking the desktop");
    await m.emitHotkey({ key: "F8", registered: true, error: null, source: "portal", trigger: "F8", configurable: true });
    await flush();
    expect(m.$("hotkey-state").textContent).toContain('The desktop gave "Push to talk" F8');
    await m.emitHotkey({
      key: "F8",
      registered: true,
      error: null,
      source: "portal",
      trigger: "Ctrl+Alt+T",
      configurable: true,
    });
    await flush();
    const state = m.$("hotkey-state").textContent ?? "";
    expect(state).toContain("Ctrl+Alt+T");
    expect(state).toContain("you asked for F8");
    const configure = m.$("hotkey-configure") as HTMLButtonElement;
    expect(configure.hidden).toBe(false);
    configure.click();
    await flush();
    expect(m.count("configure_hotkey")).toBe(1);
    m.$("nav-main").click();
    await flush();
    expect(m.$("ptt").textContent).toContain("or hold Ctrl+Alt+T");
  });

  it("turns the meter on while open and off when closed, and saves", async () => {
    const m = await mount({
      handlers: {
        list_devices: () => [
          { id: "mic1", name: "USB Mic", direction: "input", is_default: false },
          { id: "spk1", name: "Speakers", direction: "output", is_default: true },
        ],
      },
    });
    m.$("nav-settings").click();
    await flush();
    const meterCalls = () => m.calls.filter((c) => c.cmd === "set_meter").map((c) => c.args?.on);
    expect(meterCalls()).toEqual([true]);
    const input = m.$("input-device") as HTMLSelectElement;
    expect(Array.from(input.options).map((o) => o.text)).toEqual(["System default", "USB Mic"]);
    input.value = "id:mic1";
    input.dispatchEvent(new Event("change"));
    const theme = m.$("theme") as HTMLSelectElement;
    theme.value = "light";
    theme.dispatchEvent(new Event("change"));
    expect(document.documentElement.dataset.theme).toBe("light");
    m.$("settings-save").click();
    await flush();
    const save = m.calls.find((c) => c.cmd === "save_settings");
    expect(save?.args?.settings).toMatchObject({ input: { id: "mic1" }, output: "default", theme: "light", hotkey: "F8" });
    m.$("nav-main").click();
    expect(meterCalls()).toEqual([true, false]);
  });

  it("a theme previewed but not saved is reverted on leaving", async () => {
    const m = await mount({ settings: makeSettings({ theme: "dark" }) });
    m.$("nav-settings").click();
    await flush();
    const theme = m.$("theme") as HTMLSelectElement;
    expect(theme.value).toBe("dark");
    theme.value = "light";
    theme.dispatchEvent(new Event("change"));
    expect(document.documentElement.dataset.theme).toBe("light");
    m.$("nav-diagnostics").click();
    expect(document.documentElement.dataset.theme).toBe("dark");
  });

  it("captures a new hotkey (Escape cancels) and shows a save error inline", async () => {
    const m = await mount({
      handlers: {
        save_settings: () => {
          throw { code: "INVALID_SETTINGS", message: "Ctrl+Shift+Space could not be registered" };
        },
      },
    });
    m.$("nav-settings").click();
    await flush();
    const change = m.$("hotkey-change");
    change.click();
    window.dispatchEvent(new KeyboardEvent("keydown", { code: "Escape", key: "Escape", bubbles: true }));
    expect(m.$("hotkey-value").textContent).toBe("F8");
    change.click();
    window.dispatchEvent(new KeyboardEvent("keydown", { code: "ShiftLeft", key: "Shift", shiftKey: true, ctrlKey: true, bubbles: true }));
    expect(m.$("hotkey-value").textContent).toBe("Ctrl+Shift+…");
    window.dispatchEvent(new KeyboardEvent("keydown", { code: "Space", key: " ", shiftKey: true, ctrlKey: true, bubbles: true }));
    expect(m.$("hotkey-value").textContent).toBe("Ctrl+Shift+Space");
    expect(m.count("ptt_down")).toBe(0);
    m.$("settings-save").click();
    await flush();
    const err = m.$("settings-error");
    expect(err.hidden).toBe(false);
    expect(err.textContent).toContain("could not be registered");
    expect(err.textContent).toContain("INVALID_SETTINGS");
  });

  it("the mic test holds mic_test on while pressed", async () => {
    const m = await mount();
    m.$("nav-settings").click();
    const { pointer } = await import("./helpers");
    m.$("mic-test").dispatchEvent(pointer("pointerdown"));
    m.$("mic-test").dispatchEvent(pointer("pointerup"));
    await flush();
    expect(m.calls.filter((c) => c.cmd === "mic_test").map((c) => c.args?.on)).toEqual([true, false]);
  });
});

describe("levels", () => {
  it("level-changed updates the meters", async () => {
    const m = await mount();
    await emit("level-changed", { direction: "tx", rms: 1, peak: 1 });
    await new Promise((r) => setTimeout(r, 40));
    expect(m.$("meter-tx").getAttribute("aria-valuenow")).toBe("100");
    expect(m.$("meter-rx").getAttribute("aria-valuenow")).toBe("0");
  });
});

describe("diagnostics", () => {
  it("refreshes every 2 s while open and copies a report", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const m = await mount();
    const writeText = vi.fn(() => Promise.resolve());
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    m.$("nav-diagnostics").click();
    await flush();
    expect(m.count("diagnostics")).toBe(1);
    expect(m.$("diag-values").textContent).toContain("75%");
    const events = m.$("diag-events").querySelectorAll("li");
    expect(events[0]!.textContent).toContain("joined general");
    vi.advanceTimersByTime(2000);
    await flush();
    expect(m.count("diagnostics")).toBe(2);
    m.$("diag-copy").click();
    await flush();
    expect(writeText).toHaveBeenCalledOnce();
    expect(String((writeText.mock.calls[0] as unknown[])[0])).toContain("Reconnect attempts:");
    m.$("nav-main").click();
    vi.advanceTimersByTime(6000);
    await flush();
    expect(m.count("diagnostics")).toBe(2);
    Object.defineProperty(navigator, "clipboard", { value: undefined, configurable: true });
  });
});
