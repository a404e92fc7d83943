// Zero-infrastructure mode: find the newest successful run, of the pipeline or the rollback workflow on the
// default branch, that saved the tracking stack's state (artifact "mlflow-state"). Sets the output "run-id"
// ("" when there is none: the first run starts from an empty registry).
// Called from actions/github-script: require('./.github/scripts/last-state.js')({github, context, core}).
const ARTIFACT = 'mlflow-state';
const WORKFLOWS = ['pipeline.yml', 'rollback.yml'];

module.exports = async ({ github, context, core }) => {
  const { owner, repo } = context.repo;
  const branch = context.payload.repository ? context.payload.repository.default_branch : 'main';
  const runs = [];
  for (const workflow_id of WORKFLOWS) {
    const { data } = await github.rest.actions.listWorkflowRuns({
      owner, repo, workflow_id, branch, status: 'success', per_page: 20,
    });
    runs.push(...data.workflow_runs);
  }
  runs.sort((a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at));
  for (const run of runs) {
    const { data } = await github.rest.actions.listWorkflowRunArtifacts({
      owner, repo, run_id: run.id, name: ARTIFACT,
    });
    const artifact = data.artifacts.find((a) => a.name === ARTIFACT && !a.expired);
    if (artifact) {
      core.info(`restoring ${ARTIFACT} from run ${run.id} (${run.name}, ${run.updated_at})`);
      core.setOutput('run-id', String(run.id));
      return String(run.id);
    }
  }
  core.info(`no saved ${ARTIFACT} found: starting from an empty registry`);
  core.setOutput('run-id', '');
  return '';
};
