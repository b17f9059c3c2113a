// What the views share with the app shell.

import type { AppState, ErrorBody, HotkeyInfo, Settings, Theme } from "./ipc";
import type { LevelHub } from "./levels";

export type Route = "main" | "settings" | "diagnostics" | "signin";

export interface Ctx {
  win: Window;
  /** The clock (tests pass a fixed one). */
  now(): number;
  state(): AppState | null;
  settings(): Settings | null;
  setSettings(settings: Settings): void;
  hotkey(): HotkeyInfo | null;
  refreshHotkey(): Promise<void>;
  /** The view the user asked for. */
  navigate(route: Route): void;
  /** The view actually shown (the talk view becomes sign-in when signed out). */
  shown(): Route;
  toast(text: string): void;
  /** A failed command: told once, briefly (the banner is for the core's errors). */
  reportError(error: ErrorBody): void;
  applyTheme(theme: Theme): void;
  levels: LevelHub;
  /** Something (the hotkey capture) owns the keyboard: Space is not push-to-talk. */
  keyboardCaptured(): boolean;
  setKeyboardCaptured(on: boolean): void;
}

export interface View {
  el: HTMLElement;
  /** Every state (small; the whole thing each time). */
  update(state: AppState): void;
  /** Became the shown view. */
  show?(): void;
  /** Stopped being the shown view. */
  hide?(): void;
  /** 250 ms clock while something counts down. */
  tick?(): void;
  dispose?(): void;
}
