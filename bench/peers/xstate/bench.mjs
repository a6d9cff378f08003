// XState 5 side of keel's transition benchmark (bench/src/transitions.rs).
//
// The same two machines as the Rust side:
// - a traffic light: red -> green -> yellow -> red on TICK, each state scheduling its own
//   timer on entry (30 s, 3 s, 20 s), as keel's `Effect::timer_after("tick", ..)` does;
// - a counter: one state, INC adds one to the context through an action (`assign`).
//
// Each is measured two ways:
// - `transition(machine, snapshot, event)`: XState's pure transition function, which
//   returns the next snapshot and the actions to run without running them: the same
//   contract as keel's `reduce`;
// - `actor.send(event)`: the interpreted actor. Its clock is a stub, so the delayed
//   TICKs are scheduled (XState's bookkeeping runs) but never fire; real timers would
//   pile up by the million.
//
// Usage: node bench.mjs [--runs N] [--sample-ms MS]
// Prints one JSON object on stdout: versions, then per case the ns per event of each run.

import { readFileSync } from "node:fs";
import { createActor, raise, setup, assign, transition, initialTransition } from "xstate";

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const RUNS = flag("--runs", 7);
const SAMPLE_MS = flag("--sample-ms", 300);

const tick = (ms) => raise({ type: "TICK" }, { delay: ms, id: "tick" });

const trafficLight = setup({}).createMachine({
  id: "traffic_light",
  initial: "red",
  states: {
    red: { entry: tick(30_000), on: { TICK: "green" } },
    green: { entry: tick(3_000), on: { TICK: "yellow" } },
    yellow: { entry: tick(20_000), on: { TICK: "red" } },
  },
});

const counter = setup({}).createMachine({
  id: "counter",
  initial: "counting",
  context: { count: 0 },
  states: {
    counting: {
      on: { INC: { actions: assign({ count: ({ context }) => context.count + 1 }) } },
    },
  },
});

// A clock whose timers never fire: the scheduling work is done, nothing accumulates.
let timerIds = 0;
const stubClock = { setTimeout: () => ++timerIds, clearTimeout: () => {} };

// Each case returns a function that performs `n` events and returns something derived
// from the result, so the work cannot be optimised away.
const cases = {
  "traffic_light.transition": () => {
    const event = { type: "TICK" };
    let [snapshot] = initialTransition(trafficLight);
    return (n) => {
      let actions = 0;
      for (let i = 0; i < n; i++) {
        const [next, executable] = transition(trafficLight, snapshot, event);
        snapshot = next;
        actions += executable.length;
      }
      return actions;
    };
  },
  "traffic_light.send": () => {
    const event = { type: "TICK" };
    const actor = createActor(trafficLight, { clock: stubClock }).start();
    return (n) => {
      for (let i = 0; i < n; i++) actor.send(event);
      return actor.getSnapshot().value.length;
    };
  },
  "counter.transition": () => {
    const event = { type: "INC" };
    let [snapshot] = initialTransition(counter);
    return (n) => {
      for (let i = 0; i < n; i++) {
        [snapshot] = transition(counter, snapshot, event);
      }
      return snapshot.context.count;
    };
  },
  "counter.send": () => {
    const event = { type: "INC" };
    const actor = createActor(counter, { clock: stubClock }).start();
    return (n) => {
      for (let i = 0; i < n; i++) actor.send(event);
      return actor.getSnapshot().context.count;
    };
  },
};

let sink = 0;

// Grows n until one sample takes about SAMPLE_MS (the JIT warms up on the way), then
// times RUNS samples of n events.
function measure(make) {
  const run = make();
  let n = 100;
  for (;;) {
    const started = process.hrtime.bigint();
    sink += run(n);
    const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
    if (elapsed >= SAMPLE_MS / 4 || n >= 1 << 26) {
      n = Math.max(100, Math.round((n * SAMPLE_MS) / Math.max(elapsed, 0.001)));
      break;
    }
    n *= 4;
  }
  const samples = [];
  for (let r = 0; r < RUNS; r++) {
    const started = process.hrtime.bigint();
    sink += run(n);
    samples.push(Number(process.hrtime.bigint() - started) / n);
  }
  return { events_per_run: n, ns_per_event: samples };
}

const xstateVersion = JSON.parse(
  readFileSync(new URL("./node_modules/xstate/package.json", import.meta.url)),
).version;
const results = {};
for (const [name, make] of Object.entries(cases)) {
  results[name] = measure(make);
  process.stderr.write(`  xstate ${name}: ${results[name].ns_per_event.map((x) => x.toFixed(0)).join(" ")} ns\n`);
}
console.log(
  JSON.stringify({ node: process.version, xstate: xstateVersion, sink: sink > 0, cases: results }),
);
