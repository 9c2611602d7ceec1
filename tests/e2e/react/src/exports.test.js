// The runtime side of types/exports.ts: the package's exports, the helper's options and its
// public methods are the lists tsc checks against the .d.ts files.
import { expect, test } from "vitest";
import * as client from "eventbus-client";
import * as hooks from "eventbus-client/react";
import { CLIENT_EXPORTS, CLIENT_METHODS, CLIENT_OPTIONS, REACT_EXPORTS } from "../types/exports.ts";

const sorted = (names) => [...names].sort();

test("the entry points export what their declarations declare", () => {
  expect(sorted(Object.keys(client))).toEqual(sorted(CLIENT_EXPORTS));
  expect(sorted(Object.keys(hooks))).toEqual(sorted(REACT_EXPORTS));
});

test("the helper takes the options and has the public methods its declarations list", () => {
  // The constructor reads its options in one destructuring: `const { url, namespace = ..., } = options`.
  const source = client.EventBusClient.toString();
  const block = source.slice(source.indexOf("const {") + "const {".length, source.indexOf("} = options"));
  const options = block.split(",").map((part) => part.split("=")[0].trim()).filter(Boolean);
  expect(sorted(options)).toEqual(sorted(CLIENT_OPTIONS));
  const methods = Object.getOwnPropertyNames(client.EventBusClient.prototype)
    .filter((name) => name !== "constructor" && !name.startsWith("_"));
  expect(sorted(methods)).toEqual(sorted(CLIENT_METHODS));
});
