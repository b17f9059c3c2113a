// The shell: fetches the first state, subscribes to the core's events, renders the whole
// (small) state on every change, routes between the views.

import type { Ctx, Route, View } from "./context";
import { h } from "./dom";
import { noticeText } from "./format";
import {
  api,
  on,
  type AppState,
  type ErrorBody,
  type HotkeyInfo,
  type Settings,
  type Theme,
  type Unlisten,
} from "./ipc";
import { LevelHub } from "./levels";
import { pttTicks } from "./ptt";
import { statusTicks } from "./status";
import { Banner } from "./views/banner";
import { DiagnosticsView } from "./views/diagnostics";
import { Header } from "./views/header";
import { SettingsView } from "./views/settings";
import { SignInView } from "./views/signin";
import { TalkView } from "./views/talk";
import { Toast } from "./views/toast";

export const TICK_MS = 250;

export interface AppOptions {
  /** The clock (tests). */
  now?: () => number;
  /** The window (tests). */
  win?: Window;
  /** How long a toast stays. */
  toastMs?: number;
}

export interface AppHandle {
  /** Resolves when the first state is shown and the events are subscribed. */
  ready: Promise<void>;
  navigate(route: Route): void;
  /** The route the user picked / the view shown. */
  route(): Route;
  shown(): Route;
  dispose(): void;
}

/** Sets `data-theme` on `<html>` (`system` follows `prefers-color-scheme`). */
export function applyTheme(theme: Theme, doc: Document = document): void {
  doc.documentElement.dataset.theme = theme;
}

export function startApp(root: HTMLElement, opts: AppOptions = {}): AppHandle {
  const win = opts.win ?? window;
  const now = opts.now ?? (() => Date.now());
  let state: AppState | null = null;
  let settings: Settings | null = null;
  let hotkey: HotkeyInfo | null = null;
  let route: Route = "main";
  let shownRoute: Route | null = null;
  let captured = false;
  let disposed = false;
  let ticker: ReturnType<typeof setInterval> | null = null;
  const unlisteners: Unlisten[] = [];
  const levels = new LevelHub();
  const toast = new Toast(opts.toastMs);

  const ctx: Ctx = {
    win,
    now,
    state: () => state,
    settings: () => settings,
    setSettings: (s) => {
      settings = s;
    },
    hotkey: () => hotkey,
    refreshHotkey: async () => {
      const r = await api.getHotkey();
      if (r.status === "ok") {
        hotkey = r.data;
        if (state) talk.update(state);
      }
    },
    navigate: (r) => navigate(r),
    shown: () => shownRoute ?? effectiveRoute(),
    toast: (text) => toast.show(text),
    reportError: (e: ErrorBody) => toast.show(`${e.message} (${e.code})`),
    applyTheme: (t) => applyTheme(t, win.document),
    levels,
    keyboardCaptured: () => captured,
    setKeyboardCaptured: (c) => {
      captured = c;
    },
  };

  const header = new Header(ctx);
  const banner = new Banner(ctx);
  const talk = new TalkView(ctx);
  const signIn = new SignInView(ctx);
  const settingsView = new SettingsView(ctx);
  const diagnostics = new DiagnosticsView(ctx);
  const views: Record<Route, View> = {
    main: talk,
    signin: signIn,
    settings: settingsView,
    diagnostics,
  };
  const loading = h("p", { class: "view muted loading", "data-testid": "loading" }, "Starting…");
  for (const v of Object.values(views)) v.el.hidden = true;
  const main = h(
    "main",
    { class: "app-main", id: "main" },
    loading,
    ...Object.values(views).map((v) => v.el),
  );
  root.replaceChildren(header.el, banner.el, main, toast.el);
  root.classList.add("app");
  header.setRoute(route);

  function effectiveRoute(): Route {
    if (route === "main" && (!state || !state.signed_in)) return state ? "signin" : "main";
    return route;
  }

  function syncShown(): void {
    if (!state) return;
    const next = effectiveRoute();
    if (next === shownRoute) return;
    const prev = shownRoute;
    shownRoute = next;
    loading.hidden = true;
    if (prev !== null) {
      views[prev].el.hidden = true;
      views[prev].hide?.();
    }
    views[next].el.hidden = false;
    header.setRoute(next);
    views[next].show?.();
  }

  function navigate(r: Route): void {
    route = r;
    if (!state) header.setRoute(r);
    syncShown();
  }

  function render(s: AppState): void {
    state = s;
    header.update(s);
    banner.update(s);
    for (const v of Object.values(views)) v.update(s);
    syncShown();
    const ticks = statusTicks(s.presentation) || pttTicks(s.ptt);
    if (ticks && ticker === null) {
      ticker = setInterval(() => {
        header.tick();
        talk.tick();
      }, TICK_MS);
    } else if (!ticks && ticker !== null) {
      clearInterval(ticker);
      ticker = null;
    }
  }

  let fromEvent = false;
  const ready = (async () => {
    // Subscribe first so nothing between the first read and the subscription is lost.
    const subs = await Promise.all([
      on.stateChanged((s) => {
        fromEvent = true;
        if (!disposed) render(s);
      }),
      on.levelChanged((l) => levels.push(l)),
      on.noticeShown((n) => toast.show(noticeText(n))),
      // The desktop assigned or changed the talk key (portal), or it stopped working.
      on.hotkeyChanged((info) => {
        hotkey = info;
        if (disposed) return;
        if (state) talk.update(state);
        settingsView.hotkeyChanged();
      }),
    ]).catch((e: unknown) => {
      toast.show(`Cannot listen to Roger's core: ${String(e)}`);
      return [] as Unlisten[];
    });
    if (disposed) {
      for (const u of subs) u();
      return;
    }
    unlisteners.push(...subs);

    const [st, se, hk] = await Promise.all([api.getState(), api.getSettings(), api.getHotkey()]);
    if (disposed) return;
    if (hk.status === "ok") hotkey = hk.data;
    if (se.status === "ok") {
      settings = se.data;
      applyTheme(se.data.theme, win.document);
      signIn.prefill(se.data);
    }
    if (st.status === "ok") {
      // A state-changed event that came in meanwhile is newer than this read.
      if (!fromEvent) render(st.data);
      else if (state) render(state);
    } else {
      loading.textContent = `Cannot reach Roger's core: ${st.error.message}`;
    }
  })();

  return {
    ready,
    navigate,
    route: () => route,
    shown: () => shownRoute ?? effectiveRoute(),
    dispose: () => {
      disposed = true;
      if (ticker !== null) clearInterval(ticker);
      ticker = null;
      if (shownRoute !== null) views[shownRoute].hide?.();
      for (const u of unlisteners.splice(0)) {
        try {
          // Tauri's unlisten is async; a core that is already gone is fine.
          const r = u() as unknown;
          if (r instanceof Promise) r.catch(() => undefined);
        } catch {
          // Already gone.
        }
      }
      for (const v of Object.values(views)) v.dispose?.();
      levels.dispose();
      toast.dispose();
      root.replaceChildren();
    },
  };
}
