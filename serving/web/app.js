// Voting page: chat with the model, compare two answers, send a preference, a thumbs rating,
// or a better answer. Plain browser JavaScript, no build step. Text is always inserted with
// textContent (never innerHTML), so model output cannot inject markup. The page's session is an
// HttpOnly cookie the browser sends with these same-origin requests: no script ever reads it.
"use strict";

const MODEL = document.querySelector('meta[name="rlhf-model"]').content;
const USER = "web";
const $ = (id) => document.getElementById(id);

const state = { messages: [], pair: null, correctionSide: null };

function setStatus(text) { $("status").textContent = text; }

async function call(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || ("HTTP " + response.status);
    throw new Error(message);
  }
  return data;
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  div.textContent = (role === "user" ? "You: " : "Model: ") + text;
  $("history").appendChild(div);
}

function setVoting(enabled) {
  document.querySelectorAll("#pair button").forEach((b) => { b.disabled = !enabled; });
}

async function ask(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  $("send").disabled = true;
  setStatus("Thinking...");
  const messages = state.messages.concat([{ role: "user", content: prompt }]);
  try {
    const data = await call("/v1/chat/completions",
      { model: MODEL, messages: messages, pair: true, k: 2, user: USER });
    state.messages = messages;
    state.pair = { id: data.pair_id, choices: data.choices, voted: false };
    addTurn("user", prompt);
    $("prompt").value = "";
    $("answer-a").textContent = data.choices[0].message.content;
    $("answer-b").textContent = data.choices[1].message.content;
    $("pair").hidden = false;
    $("correction").hidden = true;
    // Serving sends no pair id when both answers came out the same: nothing to compare.
    setVoting(Boolean(data.pair_id));
    setStatus(data.pair_id ? "Which answer is better?" : "Both answers are the same; nothing to vote on.");
  } catch (err) {
    setStatus("Error: " + err.message);
  } finally {
    $("send").disabled = false;
  }
}

function continueWith(side) {
  // The conversation goes on from the preferred answer (A on a tie).
  const choice = state.pair.choices[side === "b" ? 1 : 0];
  state.messages.push({ role: "assistant", content: choice.message.content });
  addTurn("assistant", choice.message.content);
}

async function vote(choice) {
  setVoting(false);
  try {
    const data = await call("/v1/feedback", { pair_id: state.pair.id, choice: choice, user: USER });
    state.pair.voted = true;
    if (choice !== "both_bad") continueWith(choice === "b" ? "b" : "a");
    $("pair").hidden = true;
    setStatus("Thanks! Vote recorded (" + choice + ", " + data.event_id.slice(0, 8) + ").");
  } catch (err) {
    setVoting(true);
    setStatus("Error: " + err.message);
  }
}

async function rate(side, rating) {
  const choice = state.pair.choices[side === "b" ? 1 : 0];
  try {
    await call("/v1/feedback", { response_id: choice.response_id, rating: rating, user: USER });
    $((rating === "up" ? "up-" : "down-") + side).disabled = true;
    setStatus("Thanks! Rated answer " + side.toUpperCase() + " " + rating + ".");
  } catch (err) {
    setStatus("Error: " + err.message);
  }
}

function openCorrection(side) {
  state.correctionSide = side;
  $("correction-side").textContent = side.toUpperCase();
  $("correction-text").value = state.pair.choices[side === "b" ? 1 : 0].message.content;
  $("correction").hidden = false;
  $("correction-text").focus();
}

async function sendCorrection(event) {
  event.preventDefault();
  const side = state.correctionSide;
  const text = $("correction-text").value.trim();
  if (!text) return;
  const choice = state.pair.choices[side === "b" ? 1 : 0];
  try {
    await call("/v1/feedback", { response_id: choice.response_id, correction: text, user: USER });
    $("correction").hidden = true;
    setStatus("Thanks! Your answer was recorded.");
  } catch (err) {
    setStatus("Error: " + err.message);
  }
}

$("ask").addEventListener("submit", ask);
$("correction").addEventListener("submit", sendCorrection);
$("votes").addEventListener("click", (e) => {
  const choice = e.target.dataset && e.target.dataset.choice;
  if (choice) vote(choice);
});
document.querySelectorAll("[data-rating]").forEach((b) => {
  b.addEventListener("click", () => rate(b.dataset.side, b.dataset.rating));
});
document.querySelectorAll("[data-fix]").forEach((b) => {
  b.addEventListener("click", () => openCorrection(b.dataset.fix));
});
