// Post the evaluation report as ONE pull-request comment, updated in place on every push.
// Called from actions/github-script: require('./.github/scripts/sticky-comment.js')({github, context, core, body}).
// The comment is found by the marker that src/mlgate/report.py puts on the report's first line.
const MARKER = '<!-- mlgate-evaluation-report -->';

module.exports = async ({ github, context, core, body }) => {
  if (!body.includes(MARKER)) {
    body = `${MARKER}\n${body}`;
  }
  const { owner, repo } = context.repo;
  const issue_number = context.issue.number;
  const comments = await github.paginate(github.rest.issues.listComments, {
    owner, repo, issue_number, per_page: 100,
  });
  const mine = comments.filter(
    (c) => c.user && c.user.type === 'Bot' && c.body && c.body.includes(MARKER),
  );
  if (mine.length === 0) {
    const { data } = await github.rest.issues.createComment({ owner, repo, issue_number, body });
    core.info(`created comment ${data.id}`);
    return data.id;
  }
  await github.rest.issues.updateComment({ owner, repo, comment_id: mine[0].id, body });
  for (const extra of mine.slice(1)) {
    // left by an earlier race between two pushes: keep exactly one
    await github.rest.issues.deleteComment({ owner, repo, comment_id: extra.id });
  }
  core.info(`updated comment ${mine[0].id}`);
  return mine[0].id;
};
