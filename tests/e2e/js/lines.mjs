// Shared plumbing for the end-to-end scripts: JSON lines out on stdout, commands in on stdin.
import { createInterface } from "node:readline";

export function out(record) {
  process.stdout.write(JSON.stringify({ t: Date.now(), ...record }) + "\n");
}

/** Call `handle(command)` for every JSON line on stdin; `onEnd` when stdin closes. */
export function commands(handle, onEnd) {
  const rl = createInterface({ input: process.stdin });
  rl.on("line", async (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
    } catch (err) {
      out({ kind: "bad_command", line, error: String(err) });
      return;
    }
    try {
      await handle(command);
    } catch (err) {
      out({ kind: "command_failed", id: command.id, code: err.code, error: String(err.message || err) });
    }
  });
  rl.on("close", () => onEnd && onEnd());
}

export function fatal(err) {
  out({ kind: "fatal", error: String((err && err.stack) || err) });
  process.exit(1);
}

process.on("uncaughtException", fatal);
process.on("unhandledRejection", fatal);
