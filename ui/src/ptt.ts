// Push-to-talk: the label for each state (pure) and the press/release wiring
// (pointer hold with capture, Space while the window has focus).

import type { HotkeyInfo, PttState } from "./ipc";
import { secondsUntil } from "./status";

export type PttName = PttState["state"];

export interface PttView {
  /** `data-state`. */
  state: PttName;
  /** The big text. */
  label: string;
  /** The small line under it (hotkey hint, countdown); may be empty. */
  detail: string;
}

/** The hint under "Hold to talk". */
export function hotkeyHint(hotkey: HotkeyInfo | null | undefined): string {
  if (hotkey && hotkey.registered && hotkey.key) return `or hold ${hotkey.trigger || hotkey.key}`;
  // No global key (refused, or a desktop that has none): say so, and where Space works.
  if (hotkey && hotkey.source === "none") {
    return "or hold Space in this window (this desktop gives apps no global talk key)";
  }
  return "or hold Space in this window";
}

/** Label and detail for a PTT state at `nowMs`. */
export function pttView(ptt: PttState, nowMs: number, hotkey?: HotkeyInfo | null): PttView {
  switch (ptt.state) {
    case "idle":
      return { state: "idle", label: "Hold to talk", detail: hotkeyHint(hotkey) };
    case "requesting":
      return { state: "requesting", label: "Requesting…", detail: "" };
    case "talking": {
      const secs = secondsUntil(ptt.until_ms, nowMs) ?? 0;
      return { state: "talking", label: "Talking", detail: `${secs} s left` };
    }
    case "busy":
      return {
        state: "busy",
        label: ptt.holder ? `Busy: ${ptt.holder} is talking` : "Channel busy",
        detail: "",
      };
    case "listening":
      return {
        state: "listening",
        label: ptt.name ? `Listening to ${ptt.name}` : "Listening",
        detail: "",
      };
    case "time_up":
      return { state: "time_up", label: "Talk time is up. Release the key", detail: "" };
    default: {
      const name = String((ptt as { state?: unknown }).state ?? "idle") as PttName;
      return { state: name, label: "Hold to talk", detail: "" };
    }
  }
}

/** Whether the PTT text changes with the clock. */
export function pttTicks(ptt: PttState): boolean {
  return ptt.state === "talking";
}

/** Focus is somewhere Space types or toggles (a text field, a select, a checkbox…). */
export function isTypingTarget(target: EventTarget | null): boolean {
  if (!(target instanceof Element)) return false;
  if (target instanceof HTMLInputElement) return true;
  if (target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
  const editable = target.closest("[contenteditable]");
  return editable !== null && editable.getAttribute("contenteditable") !== "false";
}

function isSpace(e: KeyboardEvent): boolean {
  return e.code === "Space" || e.key === " " || e.key === "Spacebar";
}

export interface HoldHandlers {
  /** Asked on every press; a press that may not start does nothing. */
  canStart?: () => boolean;
  down: () => void;
  up: () => void;
}

export type PressSource = "pointer" | "space" | "key";

/**
 * One press at a time, released exactly once, whatever ends it.
 * `press` returns false when a press is already held (or may not start).
 */
export class Hold {
  private source: PressSource | null = null;
  constructor(private readonly h: HoldHandlers) {}

  get pressed(): PressSource | null {
    return this.source;
  }

  press(source: PressSource): boolean {
    if (this.source !== null) return false;
    if (this.h.canStart && !this.h.canStart()) return false;
    this.source = source;
    this.h.down();
    return true;
  }

  /** Releases when held by `source` (any source when omitted). */
  release(source?: PressSource): boolean {
    if (this.source === null || (source !== undefined && this.source !== source)) return false;
    this.source = null;
    this.h.up();
    return true;
  }
}

export interface HoldOptions extends HoldHandlers {
  /** Enter/Space on the focused element also hold (the mic test); PTT uses window Space. */
  keys?: boolean;
  /** Pressed/released, for the local pressed look. */
  onChange?: (pressed: boolean) => void;
}

/**
 * Wires a press-and-hold button: pointerdown starts (with pointer capture), pointerup,
 * pointercancel or lostpointercapture ends, once. Returns the hold and a disposer.
 */
export function wireHold(el: HTMLElement, opts: HoldOptions): { hold: Hold; dispose: () => void } {
  const hold = new Hold({
    canStart: opts.canStart,
    down: () => {
      opts.onChange?.(true);
      opts.down();
    },
    up: () => {
      opts.onChange?.(false);
      opts.up();
    },
  });
  let pointerId: number | null = null;

  const onDown = (ev: Event) => {
    const e = ev as PointerEvent;
    // Primary button only (touch and pen report 0 as well).
    if (typeof e.button === "number" && e.button > 0) return;
    if (!hold.press("pointer")) return;
    pointerId = typeof e.pointerId === "number" ? e.pointerId : null;
    if (pointerId !== null && typeof el.setPointerCapture === "function") {
      try {
        el.setPointerCapture(pointerId);
      } catch {
        // Not capturable (synthetic event): pointerup on the button still releases.
      }
    }
  };
  const onUp = (ev: Event) => {
    const e = ev as PointerEvent;
    if (hold.pressed !== "pointer") return;
    if (pointerId !== null && typeof e.pointerId === "number" && e.pointerId !== pointerId) return;
    pointerId = null;
    hold.release("pointer");
  };
  const onKeyDown = (e: KeyboardEvent) => {
    if (!(isSpace(e) || e.key === "Enter")) return;
    e.preventDefault();
    if (e.repeat) return;
    hold.press("key");
  };
  const onKeyUp = (e: KeyboardEvent) => {
    if (!(isSpace(e) || e.key === "Enter")) return;
    e.preventDefault();
    hold.release("key");
  };
  const onBlur = () => hold.release("key");
  const noMenu = (e: Event) => e.preventDefault();

  el.addEventListener("pointerdown", onDown);
  el.addEventListener("pointerup", onUp);
  el.addEventListener("pointercancel", onUp);
  el.addEventListener("lostpointercapture", onUp);
  el.addEventListener("contextmenu", noMenu);
  if (opts.keys) {
    el.addEventListener("keydown", onKeyDown);
    el.addEventListener("keyup", onKeyUp);
    el.addEventListener("blur", onBlur);
  }
  return {
    hold,
    dispose: () => {
      hold.release();
      el.removeEventListener("pointerdown", onDown);
      el.removeEventListener("pointerup", onUp);
      el.removeEventListener("pointercancel", onUp);
      el.removeEventListener("lostpointercapture", onUp);
      el.removeEventListener("contextmenu", noMenu);
      el.removeEventListener("keydown", onKeyDown);
      el.removeEventListener("keyup", onKeyUp);
      el.removeEventListener("blur", onBlur);
    },
  };
}

export interface SpaceOptions {
  /** Space is push-to-talk right now (the talk view is shown, no key capture running). */
  active: () => boolean;
}

/**
 * Space held anywhere in the window (focus not in a text field, select or checkbox) presses
 * `hold`; auto-repeat is ignored; keyup, window blur or the page being hidden release it.
 */
export function wireSpace(win: Window, hold: Hold, opts: SpaceOptions): () => void {
  const ours = (e: KeyboardEvent) =>
    isSpace(e) &&
    !e.ctrlKey &&
    !e.altKey &&
    !e.metaKey &&
    !e.isComposing &&
    !isTypingTarget(e.target) &&
    opts.active();

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.defaultPrevented || !ours(e)) return;
    if (hold.pressed === "space" || e.repeat) {
      // Auto-repeat of a held key: swallowed (no scrolling, no clicking).
      if (hold.pressed === "space") e.preventDefault();
      return;
    }
    // Keep Space from scrolling or clicking the focused button while it talks; when
    // talking is not possible (no channel…) Space keeps its usual meaning.
    if (hold.press("space")) e.preventDefault();
  };
  const onKeyUp = (e: KeyboardEvent) => {
    if (!isSpace(e)) return;
    if (hold.pressed === "space") {
      e.preventDefault();
      hold.release("space");
    }
  };
  // Losing the window loses the keyup: never leave the floor held.
  const onBlur = () => {
    hold.release("space");
    hold.release("pointer");
  };
  const onVisibility = () => {
    if (win.document.visibilityState === "hidden") onBlur();
  };

  win.addEventListener("keydown", onKeyDown);
  win.addEventListener("keyup", onKeyUp);
  win.addEventListener("blur", onBlur);
  win.document.addEventListener("visibilitychange", onVisibility);
  return () => {
    win.removeEventListener("keydown", onKeyDown);
    win.removeEventListener("keyup", onKeyUp);
    win.removeEventListener("blur", onBlur);
    win.document.removeEventListener("visibilitychange", onVisibility);
  };
}
