// The one place that knows the shape of the generated `bindings.ts`.
//
// Every type below is derived from the signatures of `commands` / `events`, not imported by
// name, so small differences in the generated file (a phase-split `Settings_Serialize`, a
// renamed helper, `void` vs `null`) do not ripple through the UI. Every command is wrapped
// so that callers always get `{ status: "ok", data } | { status: "error", error }` whatever
// error-handling mode tauri-specta was configured with, and never a rejected promise.

import { commands, events } from "./bindings";

type Fn = (...args: never[]) => unknown;
type Ret<F extends Fn> = Awaited<ReturnType<F>>;

/** The `data` of a tauri-specta result (`Result`, `DataError` or `Throw` mode). */
type OkData<R> = R extends { status: "ok"; data: infer D }
  ? D
  : R extends { status: "error" }
    ? never
    : R extends { data: infer D; error: null }
      ? D
      : R extends { data: null; error: unknown }
        ? never
        : R;

/** The payload type of one of `events.*`. */
type PayloadOf<E> = E extends { listen: (cb: (event: { payload: infer P }) => void) => unknown }
  ? P
  : never;

export type AppState = Ret<typeof commands.getState>;
export type Status = AppState["status"];
export type StatusPresentation = AppState["presentation"];
export type PttState = AppState["ptt"];
export type AppError = NonNullable<AppState["error"]>;
export type ErrorCode = AppError["code"];
export type ErrorAction = AppError["action"];
export type Member = NonNullable<AppState["user"]>;
export type ChannelInfo = AppState["channels"][number];
/** Settings as `get_settings` returns them (every field present). */
export type Settings = OkData<Ret<typeof commands.getSettings>>;
export type DeviceChoice = Settings["input"];
export type Theme = Settings["theme"];
export type HotkeyInfo = OkData<Ret<typeof commands.getHotkey>>;
export type DeviceInfo = OkData<Ret<typeof commands.listDevices>>[number];
export type Diagnostics = OkData<Ret<typeof commands.diagnostics>>;
export type LevelChanged = PayloadOf<typeof events.levelChanged>;
export type AudioDirection = LevelChanged["direction"];
export type Notice = PayloadOf<typeof events.noticeShown>;
export type HistoryEntry = OkData<Ret<typeof commands.channelHistory>>[number];

/** A command's error: a machine code to act on and a message for a person. */
export type ErrorBody = { code: ErrorCode; message: string };

/** What every wrapped command resolves to. */
export type Result<T> = { status: "ok"; data: T } | { status: "error"; error: ErrorBody };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null;
}

/** Anything a rejected `invoke` can carry (an `ErrorBody`, a string from Tauri, an `Error`). */
export function toErrorBody(e: unknown): ErrorBody {
  if (isRecord(e) && typeof e.code === "string" && typeof e.message === "string") {
    return { code: e.code as ErrorCode, message: e.message };
  }
  if (e instanceof Error) return { code: "UNKNOWN", message: e.message };
  if (typeof e === "string") return { code: "UNKNOWN", message: e };
  return { code: "UNKNOWN", message: String(e) };
}

/** A command without a Rust `Result`: its value, or the rejection as an error. */
async function plain<T>(call: () => Promise<unknown>): Promise<Result<T>> {
  try {
    return { status: "ok", data: (await call()) as T };
  } catch (e) {
    return { status: "error", error: toErrorBody(e) };
  }
}

/** A command whose Rust fn returns `Result<T, ErrorBody>`, in any tauri-specta mode. */
async function fallible<T>(call: () => Promise<unknown>): Promise<Result<T>> {
  try {
    const v = await call();
    if (isRecord(v) && v.status === "ok" && "data" in v) return { status: "ok", data: v.data as T };
    if (isRecord(v) && v.status === "error" && "error" in v) {
      return { status: "error", error: toErrorBody(v.error) };
    }
    if (isRecord(v) && "data" in v && "error" in v && Object.keys(v).length === 2) {
      return v.error === null || v.error === undefined
        ? { status: "ok", data: v.data as T }
        : { status: "error", error: toErrorBody(v.error) };
    }
    return { status: "ok", data: v as T };
  } catch (e) {
    return { status: "error", error: toErrorBody(e) };
  }
}

/** The Rust commands. Each resolves to a `Result`; none rejects. */
export const api = {
  getState: () => plain<AppState>(() => commands.getState()),
  getSettings: () => plain<Settings>(() => commands.getSettings()),
  saveSettings: (settings: Settings) => fallible<null>(() => commands.saveSettings(settings)),
  getHotkey: () => plain<HotkeyInfo>(() => commands.getHotkey()),
  configureHotkey: () => fallible<null>(() => commands.configureHotkey()),
  signIn: (serverUrl: string, token: string, allowUnencrypted: boolean) =>
    fallible<null>(() => commands.signIn(serverUrl, token, allowUnencrypted)),
  signOut: () => fallible<null>(() => commands.signOut()),
  disconnect: () => fallible<null>(() => commands.disconnect()),
  joinChannel: (channel: string) => fallible<null>(() => commands.joinChannel(channel)),
  leaveChannel: () => fallible<null>(() => commands.leaveChannel()),
  pttDown: () => fallible<null>(() => commands.pttDown()),
  pttUp: () => fallible<null>(() => commands.pttUp()),
  rejoin: () => fallible<null>(() => commands.rejoin()),
  dismissError: () => plain<null>(() => commands.dismissError()),
  listDevices: () => fallible<DeviceInfo[]>(() => commands.listDevices()),
  setMeter: (on: boolean) => fallible<null>(() => commands.setMeter(on)),
  micTest: (on: boolean) => fallible<null>(() => commands.micTest(on)),
  diagnostics: () => plain<Diagnostics>(() => commands.diagnostics()),
  channelHistory: (channel: string) =>
    fallible<HistoryEntry[]>(() => commands.channelHistory(channel)),
  playTransmission: (id: string) => fallible<null>(() => commands.playTransmission(id)),
  stopPlayback: () => plain<null>(() => commands.stopPlayback()),
};

export type Unlisten = () => void;

/** The Rust events; each callback gets the bare payload. */
export const on = {
  stateChanged: (cb: (state: AppState) => void): Promise<Unlisten> =>
    events.stateChanged.listen((e) => cb(e.payload as AppState)),
  levelChanged: (cb: (level: LevelChanged) => void): Promise<Unlisten> =>
    events.levelChanged.listen((e) => cb(e.payload as LevelChanged)),
  noticeShown: (cb: (notice: Notice) => void): Promise<Unlisten> =>
    events.noticeShown.listen((e) => cb(e.payload as Notice)),
  hotkeyChanged: (cb: (info: HotkeyInfo) => void): Promise<Unlisten> =>
    events.hotkeyChanged.listen((e) => cb(e.payload as HotkeyInfo)),
};

/** Tauri event names, for tests that emit through the mocked event system. */
export const EVENT_NAMES = {
  stateChanged: "state-changed",
  levelChanged: "level-changed",
  noticeShown: "notice-shown",
  hotkeyChanged: "hotkey-changed",
} as const;
