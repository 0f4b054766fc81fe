// The rating page: one unit = onboarding comparisons first, then the real ones.
// Config (inlined by page.py): {mode: "server"|"mturk", api: "/api", view: <unit view in mturk mode>}.
(function () {
  'use strict';
  const cfg = JSON.parse(document.getElementById('page-config').textContent);
  const params = new URLSearchParams(window.location.search);
  const $ = (id) => document.getElementById(id);
  const state = { view: null, index: 0, answers: [], workerId: '', shownAt: 0, taskStart: 0 };

  function show(sectionId) {
    for (const id of ['start-screen', 'task-screen', 'screened-out', 'done']) {
      $(id).hidden = id !== sectionId;
    }
  }

  function fail(message) {
    $('error').textContent = message;
  }

  async function postJson(path, body) {
    const response = await fetch(cfg.api + path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(data.error || ('server answered ' + response.status));
    }
    return data;
  }

  function choiceText(template, speaker) {
    return template.replace('<Speaker 1>', speaker).replace('<Speaker 2>', speaker);
  }

  function renderConversation(container, turns, speakerLabel) {
    container.replaceChildren();
    for (const turn of turns) {
      const bubble = document.createElement('div');
      bubble.className = 'turn ' + turn.role;
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = turn.role === 'evaluated' ? speakerLabel : 'Seeker';
      bubble.appendChild(who);
      bubble.appendChild(document.createTextNode(turn.text));
      container.appendChild(bubble);
    }
  }

  function renderComparison() {
    const view = state.view;
    const comparison = view.comparisons[state.index];
    $('progress').textContent = 'Comparison ' + (state.index + 1) + ' of ' + view.comparisons.length;
    $('question').textContent = view.question.question;
    renderConversation($('left-convo'), comparison.left, 'Speaker A');
    renderConversation($('right-convo'), comparison.right, 'Speaker B');
    $('choice-left-text').textContent = choiceText(view.question.s1_choice, 'Speaker A');
    $('choice-right-text').textContent = choiceText(view.question.s2_choice, 'Speaker B');
    $('choice-left').checked = false;
    $('choice-right').checked = false;
    $('reason').value = '';
    $('next').disabled = true;
    $('next').textContent = state.index + 1 === view.comparisons.length ? 'Submit' : 'Next';
    state.shownAt = Date.now();
    show('task-screen');
    window.scrollTo(0, 0);
  }

  function currentChoice() {
    if ($('choice-left').checked) return 'left';
    if ($('choice-right').checked) return 'right';
    return null;
  }

  function updateNext() {
    const ready = currentChoice() !== null
      && $('reason').value.trim().length >= state.view.min_reason_chars;
    $('next').disabled = !ready || state.preview === true;
  }

  async function finish() {
    const payload = {
      unit_id: state.view.unit_id,
      worker_id: state.workerId,
      answers: state.answers,
      task_start: state.taskStart / 1000,
      task_end: Date.now() / 1000,
    };
    if (cfg.mode === 'mturk') {
      const form = $('mturk-form');
      const submitTo = params.get('turkSubmitTo') || 'https://www.mturk.com';
      form.action = submitTo.replace(/\/$/, '') + '/mturk/externalSubmit';
      $('mturk-assignment-id').value = params.get('assignmentId') || '';
      $('mturk-answer').value = JSON.stringify(payload);
      form.submit();
      return;
    }
    const result = await postJson('/submit', payload);
    $('done-detail').textContent = 'Your answers were saved (unit ' + result.unit_id + ').';
    show('done');
  }

  async function next() {
    const choice = currentChoice();
    state.answers.push({
      choice: choice,
      reason: $('reason').value.trim(),
      seconds: (Date.now() - state.shownAt) / 1000,
    });
    state.index += 1;
    $('next').disabled = true;
    try {
      // The server grades onboarding as soon as it is done; the MTurk route grades it when
      // the requester collects the assignment (the page never knows the right answers).
      if (cfg.mode === 'server' && state.index === state.view.onboarding_count) {
        const graded = await postJson('/onboarding', {
          unit_id: state.view.unit_id, worker_id: state.workerId, answers: state.answers,
        });
        if (!graded.passed) {
          show('screened-out');
          return;
        }
      }
      if (state.index === state.view.comparisons.length) {
        await finish();
      } else {
        renderComparison();
      }
    } catch (err) {
      fail(err.message);
    }
  }

  async function startServerUnit() {
    const workerId = $('worker-id').value.trim();
    if (!workerId) {
      fail('Please enter your rater ID.');
      return;
    }
    state.workerId = workerId;
    fail('');
    const response = await fetch(cfg.api + '/unit?worker_id=' + encodeURIComponent(workerId));
    const data = await response.json().catch(() => ({}));
    if (response.status === 403) {
      show('screened-out');
      return;
    }
    if (!response.ok) {
      fail(data.error || ('server answered ' + response.status));
      return;
    }
    begin(data);
  }

  function begin(view) {
    state.view = view;
    state.index = 0;
    state.answers = [];
    state.taskStart = Date.now();
    renderComparison();
  }

  $('choice-left').addEventListener('change', updateNext);
  $('choice-right').addEventListener('change', updateNext);
  $('reason').addEventListener('input', updateNext);
  $('next').addEventListener('click', next);

  if (cfg.mode === 'mturk') {
    state.workerId = params.get('workerId') || '';
    state.preview = (params.get('assignmentId') || 'ASSIGNMENT_ID_NOT_AVAILABLE') === 'ASSIGNMENT_ID_NOT_AVAILABLE';
    begin(cfg.view);
    $('preview-note').hidden = !state.preview;
  } else {
    $('start').addEventListener('click', () => startServerUnit().catch((err) => fail(err.message)));
    $('worker-id').value = params.get('worker_id') || '';
    show('start-screen');
  }
})();
