// Zero-infrastructure mode: find the registry state (artifact "mlflow-state") to restore: the newest one saved
// by this repository's own pipeline or rollback runs on the default branch, started by a push, the schedule or
// a workflow_dispatch. A pull request's run is never taken (a fork's pull request from its own `main` may
// carry a modified pipeline.yml that uploads a forged state), nor a run of another repository.
// Sets the output "run-id" ("" when the registry starts empty).
//
// The registry starts empty only on a repository that never saved a state. When one was saved and none can be
// restored now (expired after its retention days, deleted), the step fails and says how to recover: it never
// starts from an empty registry on its own. With `required: false` (pull requests' throwaway copy) it warns.
// Called from actions/github-script:
//   require('./.github/scripts/last-state.js')({github, context, core, required: true})
const ARTIFACT = 'mlflow-state';
const WORKFLOWS = ['pipeline.yml', 'rollback.yml'];
const EVENTS = ['push', 'schedule', 'workflow_dispatch'];
const PER_PAGE = 100;
const RETENTION_DAYS = 90; // the retention-days of the state artifact (.github/actions/stack-save)
const DAY_MS = 24 * 3600 * 1000;

async function ownRuns(github, owner, repo, branch) {
  const runs = [];
  for (const workflow_id of WORKFLOWS) {
    for (let page = 1; ; page += 1) {
      const { data } = await github.rest.actions.listWorkflowRuns({
        owner, repo, workflow_id, branch, status: 'completed', per_page: PER_PAGE, page,
      });
      runs.push(...data.workflow_runs);
      if (data.workflow_runs.length < PER_PAGE) break;
    }
  }
  const full = `${owner}/${repo}`;
  return runs
    .filter((r) => EVENTS.includes(r.event) && r.head_branch === branch
      && r.head_repository && r.head_repository.full_name === full)
    .sort((a, b) => Date.parse(b.run_started_at || b.created_at) - Date.parse(a.run_started_at || a.created_at));
}

module.exports = async ({ github, context, core, required = true }) => {
  const { owner, repo } = context.repo;
  const branch = context.payload.repository ? context.payload.repository.default_branch : 'main';
  const runs = await ownRuns(github, owner, repo, branch);
  let lost = null;
  for (const run of runs) {
    const { data } = await github.rest.actions.listWorkflowRunArtifacts({
      owner, repo, run_id: run.id, name: ARTIFACT,
    });
    const states = data.artifacts.filter((a) => a.name === ARTIFACT);
    const live = states.find((a) => !a.expired);
    if (live) {
      core.info(`restoring ${ARTIFACT} from run ${run.id} (${run.name}, ${run.event}, ${run.conclusion}, `
        + `saved ${live.created_at})`);
      core.setOutput('run-id', String(run.id));
      return String(run.id);
    }
    if (states.length && !lost) lost = `run ${run.id} saved it on ${states[0].created_at}; it has expired`;
  }
  const now = Date.now();
  const old = runs.find((r) => now - Date.parse(r.run_started_at || r.created_at) > RETENTION_DAYS * DAY_MS);
  if (!lost && old) lost = `run ${old.id} of ${old.run_started_at || old.created_at} is older than the state's `
    + `${RETENTION_DAYS} days of retention, so a state it saved may have been deleted`;
  if (!lost) {
    core.info(`no ${ARTIFACT} was ever saved by ${owner}/${repo}'s own runs on ${branch}: `
      + 'starting from an empty registry (the first release creates it)');
    core.setOutput('run-id', '');
    return '';
  }
  const how = `The registry state (artifact ${ARTIFACT}) cannot be restored: ${lost}. Nothing was started from `
    + 'an empty registry, which would reuse version numbers and lose the champion and the audit trail. '
    + 'To recover (docs/ci.md, "When the registry state is lost"): switch to a team tracking server '
    + '(vars.MLFLOW_TRACKING_URI), or start a new registry on purpose: delete the old versions of the '
    + 'serving and batch packages in GHCR (version numbers start at 1 again, and an existing tag v<n> is '
    + 'refused, never overwritten), then run the pipeline by hand with the input reset-registry.';
  if (required) {
    core.setFailed(how);
    throw new Error(how);
  }
  core.warning(how);
  core.setOutput('run-id', '');
  return '';
};
