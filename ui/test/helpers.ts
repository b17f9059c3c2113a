// Fixtures and a mounted app over mocked IPC.

import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import { emit } from "@tauri-apps/api/event";
import { vi } from "vitest";
import { startApp, type AppHandle } from "../src/app";
import type { AppState, Diagnostics, HotkeyInfo, Settings } from "../src/ipc";
import { present } from "./presentations";

export const NOW = 1_700_000_000_000;

/** A state as the core sends it: its presentation is Rust's for its status and banner. */
export function makeState(overrides: Partial<AppState> = {}): AppState {
  const state = makeBareState(overrides);
  const { status, error } = state;
  const failure =
    status.status === "Failed" && error && error.code === status.code ? error.message : null;
  return { ...state, presentation: overrides.presentation ?? present(status, failure) };
}

function makeBareState(overrides: Partial<AppState>): Omit<AppState, "presentation"> {
  return {
    status: { status: "Connected" },
    signed_in: true,
    token_store: null,
    server_url: "ws://127.0.0.1:7070/ws",
    user: { user: "u-alice", name: "Alice" },
    channels: [
      { id: "general", description: "Everyone" },
      { id: "ops", description: "" },
    ],
    channel: "general",
    members: [
      { user: "u-alice", name: "Alice" },
      { user: "u-bob", name: "Bob" },
    ],
    talker: null,
    ptt: { state: "idle" },
    mic_test: false,
    error: null,
    ...overrides,
  };
}

export function makeSettings(overrides: Partial<Settings> = {}): Settings {
  return {
    server_url: "ws://127.0.0.1:7070/ws",
    allow_unencrypted: false,
    channel: "general",
    hotkey: "F8",
    input: "default",
    output: "default",
    tones: true,
    theme: "system",
    ...overrides,
  };
}

export function makeDiagnostics(overrides: Partial<Diagnostics> = {}): Diagnostics {
  return {
    version: "0.1.0",
    status: { status: "Connected" },
    presentation: present(overrides.status ?? { status: "Connected" }),
    recovery: {
      reconnect_attempts_total: 4,
      reconnect_successes: 3,
      reconnect_failures: 1,
      reconnect_success_rate: 0.75,
      time_to_recover_ms: [812, 1200, 640],
      ice_restarts: 2,
    },
    audio: { frames_sent: 100, frames_received: 200, frames_concealed: 3, frames_recovered: 1 },
    underruns: 5,
    capture_dropped: 480,
    output_device: "Speakers",
    events: [
      { at_ms: NOW - 5000, text: "connected" },
      { at_ms: NOW - 1000, text: "joined general" },
    ],
    ...overrides,
  };
}

export type Call = { cmd: string; args: Record<string, unknown> | undefined };

export interface Mounted {
  app: AppHandle;
  root: HTMLElement;
  calls: Call[];
  cmds(): string[];
  count(cmd: string): number;
  /** Replaces what `get_state` returns (events are emitted separately). */
  setState(s: AppState): void;
  /** Emits `state-changed` through the mocked event system. */
  emitState(s: AppState): Promise<void>;
  emitHotkey(info: HotkeyInfo): Promise<void>;
  $(testid: string): HTMLElement;
  q(testid: string): HTMLElement | null;
}

export interface MountOptions {
  state?: AppState;
  settings?: Settings;
  hotkey?: HotkeyInfo;
  /** Per-command overrides: return a value, or throw to reject. */
  handlers?: Record<string, (args: Record<string, unknown> | undefined) => unknown>;
  /** The app's clock (default: always NOW). */
  now?: () => number;
}

let mounted: Mounted[] = [];

export async function mount(opts: MountOptions = {}): Promise<Mounted> {
  let state = opts.state ?? makeState();
  const settings = opts.settings ?? makeSettings();
  const hotkey: HotkeyInfo = opts.hotkey ?? { key: "F8", registered: true, error: null, source: "x11", trigger: null, configurable: false };
  const calls: Call[] = [];
  mockIPC(
    (cmd, args) => {
      const a = args as Record<string, unknown> | undefined;
      calls.push({ cmd, args: a });
      const custom = opts.handlers?.[cmd];
      if (custom) return custom(a);
      switch (cmd) {
        case "get_state":
          return state;
        case "get_settings":
          return settings;
        case "get_hotkey":
          return hotkey;
        case "diagnostics":
          return makeDiagnostics();
        case "list_devices":
        case "channel_history":
          return [];
        default:
          return null;
      }
    },
    { shouldMockEvents: true },
  );
  const root = document.createElement("div");
  document.body.append(root);
  const app = startApp(root, { now: opts.now ?? (() => NOW) });
  await app.ready;
  const m: Mounted = {
    app,
    root,
    calls,
    cmds: () => calls.map((c) => c.cmd),
    count: (cmd) => calls.filter((c) => c.cmd === cmd).length,
    setState: (s) => {
      state = s;
    },
    emitHotkey: async (info) => {
      await emit("hotkey-changed", info);
    },
    emitState: async (s) => {
      state = s;
      await emit("state-changed", s);
    },
    $: (testid) => {
      const el = root.querySelector<HTMLElement>(`[data-testid="${testid}"]`);
      if (!el) throw new Error(`no [data-testid="${testid}"]`);
      return el;
    },
    q: (testid) => root.querySelector<HTMLElement>(`[data-testid="${testid}"]`),
  };
  mounted.push(m);
  return m;
}

export function unmountAll(): void {
  for (const m of mounted) {
    m.app.dispose();
    m.root.remove();
  }
  mounted = [];
  clearMocks();
  document.documentElement.removeAttribute("data-theme");
}

/** Lets pending promise callbacks (mocked invokes are async) run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
}

/** A pointer event for jsdom (which has no PointerEvent). */
export function pointer(type: string, init: { pointerId?: number; button?: number } = {}): Event {
  const e = new MouseEvent(type, { bubbles: true, cancelable: true, button: init.button ?? 0 });
  Object.defineProperty(e, "pointerId", { value: init.pointerId ?? 1 });
  Object.defineProperty(e, "pointerType", { value: "mouse" });
  return e;
}

export function key(type: "keydown" | "keyup", init: KeyboardEventInit = {}): KeyboardEvent {
  return new KeyboardEvent(type, { bubbles: true, cancelable: true, code: "Space", key: " ", ...init });
}

export { vi };
