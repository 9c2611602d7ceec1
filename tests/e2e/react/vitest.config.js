// node_modules/eventbus-client is a symlink to clients/js (a folder dependency), so its
// imports of react and socket.io-client must resolve from this project: `dedupe` does that
// (and keeps one copy of React, which hooks need).
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: { dedupe: ["react", "react-dom", "socket.io-client"] },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{js,jsx,ts,tsx}"],
    testTimeout: 20000,
  },
});
