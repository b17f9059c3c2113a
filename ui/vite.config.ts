import { defineConfig } from "vitest/config";

// Tauri serves `dist/` (tauri.conf.json: frontendDist "../ui/dist"); no dev server in the
// normal workflow, but `npm run dev` still works on the port tauri.conf.json expects.
export default defineConfig({
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2021",
    sourcemap: false,
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
  },
});
