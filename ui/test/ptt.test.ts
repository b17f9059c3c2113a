import { afterEach, describe, expect, it } from "vitest";
import type { PttState } from "../src/ipc";
import { hotkeyHint, pttView, wireHold } from "../src/ptt";
import { flush, key, makeState, mount, NOW, pointer, unmountAll } from "./helpers";

afterEach(() => unmountAll());

const F8 = { key: "F8", registered: true, error: null, source: "x11", trigger: null, configurable: false } as const;

describe("pttView", () => {
  const cases: [PttState, string, string][] = [
    [{ state: "idle" }, "Hold to talk", "or hold F8"],
    [{ state: "requesting" }, "Requesting…", ""],
    [{ state: "talking", until_ms: NOW + 12_000 }, "Talking", "12 s left"],
    [{ state: "busy", holder: "Bob" }, "Busy: Bob is talking", ""],
    [{ state: "busy", holder: "" }, "Channel busy", ""],
    [{ state: "listening", name: "Carol" }, "Listening to Carol", ""],
    [{ state: "time_up" }, "Talk time is up. Release the key", ""],
  ];
  it.each(cases)("%j", (ptt, label, detail) => {
    const v = pttView(ptt, NOW, F8);
    expect(v.state).toBe(ptt.state);
    expect(v.label).toBe(label);
    expect(v.detail).toBe(detail);
  });

  it("counts talk time down and never below zero", () => {
    expect(pttView({ state: "talking", until_ms: NOW + 2100 }, NOW).detail).toBe("3 s left");
    expect(pttView({ state: "talking", until_ms: NOW - 10 }, NOW).detail).toBe("0 s left");
  });

  it("hints Space when the hotkey is not registered", () => {
    expect(hotkeyHint({ ...F8, registered: false, error: "taken" })).toBe("or hold Space in this window");
    expect(hotkeyHint(null)).toBe("or hold Space in this window");
    expect(hotkeyHint({ ...F8, registered: false, error: "no portal", source: "none" })).toBe(
      "or hold Space in this window (this desktop gives apps no global talk key)",
    );
  });

  it("names the trigger the desktop assigned", () => {
    expect(hotkeyHint({ ...F8, source: "portal", trigger: "Ctrl+F9" })).toBe("or hold Ctrl+F9");
  });
});

describe("PTT button in the app", () => {
  const states: PttState[] = [
    { state: "idle" },
    { state: "requesting" },
    { state: "talking", until_ms: NOW + 5000 },
    { state: "busy", holder: "Bob" },
    { state: "busy", holder: "" },
    { state: "listening", name: "Bob" },
    { state: "time_up" },
  ];

  it("shows the label and data-state of every PttState", async () => {
    const m = await mount();
    for (const ptt of states) {
      await m.emitState(makeState({ ptt }));
      const button = m.$("ptt");
      const v = pttView(ptt, NOW, F8);
      expect(button.dataset.state).toBe(ptt.state);
      expect(button.querySelector(".ptt-label")!.textContent).toBe(v.label);
    }
    await m.emitState(makeState({ ptt: { state: "idle" } }));
    expect(m.$("ptt").textContent).toContain("or hold F8");
  });

  it("pointerdown/pointerup send ptt_down/ptt_up once each", async () => {
    const m = await mount();
    const button = m.$("ptt");
    button.dispatchEvent(pointer("pointerdown"));
    button.dispatchEvent(pointer("pointerdown")); // a second finger: same press
    button.dispatchEvent(pointer("pointerup"));
    button.dispatchEvent(pointer("lostpointercapture")); // follows pointerup: no second release
    button.dispatchEvent(pointer("pointercancel"));
    await flush();
    expect(m.count("ptt_down")).toBe(1);
    expect(m.count("ptt_up")).toBe(1);
    expect(m.cmds().indexOf("ptt_down")).toBeLessThan(m.cmds().indexOf("ptt_up"));
  });

  it("pointercancel and lost capture release too", async () => {
    const m = await mount();
    const button = m.$("ptt");
    button.dispatchEvent(pointer("pointerdown"));
    button.dispatchEvent(pointer("pointercancel"));
    button.dispatchEvent(pointer("pointerdown"));
    button.dispatchEvent(pointer("lostpointercapture"));
    await flush();
    expect(m.count("ptt_down")).toBe(2);
    expect(m.count("ptt_up")).toBe(2);
  });

  it("Space: keydown (repeats ignored) / keyup send once each", async () => {
    const m = await mount();
    const down = key("keydown");
    window.dispatchEvent(down);
    window.dispatchEvent(key("keydown", { repeat: true }));
    window.dispatchEvent(key("keydown", { repeat: true }));
    window.dispatchEvent(key("keyup"));
    await flush();
    expect(down.defaultPrevented).toBe(true);
    expect(m.count("ptt_down")).toBe(1);
    expect(m.count("ptt_up")).toBe(1);
  });

  it("Space is ignored in text fields and releases on window blur", async () => {
    const m = await mount();
    const input = document.createElement("input");
    m.root.append(input);
    input.dispatchEvent(key("keydown"));
    input.dispatchEvent(key("keyup"));
    await flush();
    expect(m.count("ptt_down")).toBe(0);

    window.dispatchEvent(key("keydown"));
    window.dispatchEvent(new Event("blur"));
    window.dispatchEvent(key("keyup"));
    await flush();
    expect(m.count("ptt_down")).toBe(1);
    expect(m.count("ptt_up")).toBe(1);
  });

  it("is disabled but focusable, with a reason, when no channel is joined", async () => {
    const m = await mount({ state: makeState({ channel: null, members: [] }) });
    const button = m.$("ptt") as HTMLButtonElement;
    expect(button.disabled).toBe(false);
    expect(button.getAttribute("aria-disabled")).toBe("true");
    expect(button.getAttribute("aria-label")).toBe("Push to talk is unavailable: join a channel first");
    button.dispatchEvent(pointer("pointerdown"));
    button.dispatchEvent(pointer("pointerup"));
    const space = key("keydown");
    window.dispatchEvent(space);
    window.dispatchEvent(key("keyup"));
    await flush();
    expect(m.count("ptt_down")).toBe(0);
    expect(m.count("ptt_up")).toBe(0);
    expect(space.defaultPrevented).toBe(false); // Space keeps its usual meaning

    await m.emitState(makeState({ status: { status: "Reconnecting", attempt: 1, max: 5, retry_at_ms: NOW } }));
    expect(button.getAttribute("aria-label")).toBe("Push to talk is unavailable: not connected");
    await m.emitState(makeState());
    expect(button.hasAttribute("aria-disabled")).toBe(false);
    expect(button.hasAttribute("aria-label")).toBe(false);
  });

  it("a press held when the state turns disabled still releases", async () => {
    const m = await mount();
    const button = m.$("ptt");
    button.dispatchEvent(pointer("pointerdown"));
    await m.emitState(makeState({ status: { status: "Connecting" } }));
    button.dispatchEvent(pointer("pointerup"));
    await flush();
    expect(m.count("ptt_down")).toBe(1);
    expect(m.count("ptt_up")).toBe(1);
  });

  it("Space does nothing outside the talk view", async () => {
    const m = await mount();
    m.$("nav-settings").click();
    window.dispatchEvent(key("keydown"));
    window.dispatchEvent(key("keyup"));
    await flush();
    expect(m.count("ptt_down")).toBe(0);
  });
});

describe("wireHold", () => {
  it("Enter/Space on the element hold when keys are on (mic test)", () => {
    const el = document.createElement("button");
    const log: string[] = [];
    const { dispose } = wireHold(el, { keys: true, down: () => log.push("down"), up: () => log.push("up") });
    el.dispatchEvent(key("keydown", { code: "Enter", key: "Enter" }));
    el.dispatchEvent(key("keydown", { code: "Enter", key: "Enter", repeat: true }));
    el.dispatchEvent(key("keyup", { code: "Enter", key: "Enter" }));
    el.dispatchEvent(pointer("pointerdown"));
    el.dispatchEvent(pointer("pointerdown", { button: 2 }));
    el.dispatchEvent(pointer("pointerup"));
    expect(log).toEqual(["down", "up", "down", "up"]);
    dispose();
  });
});
